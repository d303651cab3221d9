// Runs the real `moetrain` binary (as a user would) and captures its exit
// status and output, for the end-to-end and bad-input tests.
#pragma once

#include <sys/wait.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "checkpoint/hdf5_file.h"
#include "test_util.h"
#include "tiny_model.h"

namespace mt::test_util {

struct CommandResult {
  int status = -1;     // exit status
  std::string output;  // stdout and stderr together
};

// A shell command line's exit status and output (stdout and stderr together).
inline CommandResult run_shell(const std::string& cmd) {
  CommandResult r;
  FILE* pipe = popen((cmd + " 2>&1").c_str(), "r");
  if (!pipe) return r;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), pipe)) > 0) r.output.append(buf.data(), n);
  const int raw = pclose(pipe);
  r.status = WIFEXITED(raw) ? WEXITSTATUS(raw) : -1;
  return r;
}

// The test itself is an MPI process: its OMPI_/PMIX_ variables would make a
// child mpirun think it belongs to this job, so a command line starting one
// clears them first.
inline const std::string kClearMpiEnvironment =
    "for v in $(env | grep -oE '^(OMPI|PMIX|OPAL|ORTE)_[A-Za-z0-9_]*'); do unset $v; done; ";

// mpirun's flags for these tests: as root, more ranks than cores; ob1
// messaging, which starts a process 0.2 s sooner than probing for UCX.
inline const std::string kMpirunFlags =
    " --oversubscribe --bind-to none --allow-run-as-root --mca btl_vader_single_copy_mechanism none --mca pml ob1 ";

// ranks > 0: under mpirun with that many ranks (as root, oversubscribed).
// test_threads() a process (default 1: ctest runs tests side by side).
inline CommandResult run_moetrain(const std::string& args, int ranks = 0) {
  const std::string threads = "OMP_NUM_THREADS=" + std::to_string(test_threads()) + " ";
  if (ranks == 0) return run_shell(threads + MT_MOETRAIN_BIN + " " + args);
  return run_shell(kClearMpiEnvironment + threads + MT_MPIEXEC + " -np " + std::to_string(ranks) + kMpirunFlags +
                   MT_MOETRAIN_BIN + " " + args);
}

// A directory that `fill` makes once for all the test processes of a build
// (ctest runs every test in a process of its own), for a fixture as slow as
// a multi-rank training run. It is filled under a name of its own and
// renamed into place, so a test running beside it never sees half of it,
// and named by the moetrain binary's modification time, so a rebuild makes
// it anew (removing the earlier build's). Returns the path as the output,
// or the failed fill's result.
inline CommandResult shared_fixture_dir(const std::string& name,
                                        const std::function<CommandResult(const std::string& dir)>& fill) {
  namespace fs = std::filesystem;
  const auto built = fs::last_write_time(MT_MOETRAIN_BIN).time_since_epoch().count();
  const fs::path dir = fs::path(MT_TEST_CACHE_DIR) / (name + "-" + std::to_string(built));
  if (fs::exists(dir)) return {0, dir};
  fs::create_directories(dir.parent_path());
  const fs::path filling = dir.string() + ".filling-" + std::to_string(::getpid());
  fs::remove_all(filling);
  fs::create_directories(filling);
  CommandResult r = fill(filling);
  if (r.status != 0) return r;
  std::error_code ec;
  fs::rename(filling, dir, ec);  // fails when another test got there first: theirs is as good
  if (ec) fs::remove_all(filling, ec);
  for (const auto& old : fs::directory_iterator(dir.parent_path(), ec))  // earlier builds'
    if (old.path().filename().string().starts_with(name + "-") && old.path() != dir &&
        old.path().string().find(".filling-") == std::string::npos)
      fs::remove_all(old.path(), ec);
  return {0, dir};
}

// The pid of the moetrain process of world rank `rank` whose command line
// mentions `marker`, or -1.
inline int find_rank_pid(const std::string& marker, int rank) {
  namespace fs = std::filesystem;
  for (const auto& entry : fs::directory_iterator("/proc")) {
    const std::string pid = entry.path().filename();
    if (pid.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream cmd(entry.path() / "cmdline"), env(entry.path() / "environ");
    std::string cmdline((std::istreambuf_iterator<char>(cmd)), {}), environ((std::istreambuf_iterator<char>(env)), {});
    if (cmdline.find("moetrain") == std::string::npos || cmdline.find(marker) == std::string::npos) continue;
    if (cmdline.find("mpirun") != std::string::npos) continue;
    if (environ.find(std::string("OMPI_COMM_WORLD_RANK=") + std::to_string(rank) + '\0') != std::string::npos)
      return std::stoi(pid);
  }
  return -1;
}

// The records of a --metrics-file, one JSON object a line.
inline std::vector<nlohmann::json> read_metrics(const std::string& path) {
  std::vector<nlohmann::json> out;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) out.push_back(nlohmann::json::parse(line));
  return out;
}

// A deterministic English-like corpus: words drawn from a small vocabulary
// into sentences, so that a byte-level model has spelling to learn.
inline std::string synthetic_text(size_t bytes, unsigned seed) {
  static const char* kWords[] = {"the", "model", "routes", "each", "token", "to", "two", "experts",
                                 "and", "a", "small", "router", "learns", "which", "one", "fits",
                                 "best", "while", "attention", "reads", "earlier", "words", "in",
                                 "order", "training", "loss", "falls", "as", "steps", "go", "by"};
  std::mt19937 rng(seed);
  std::string out;
  while (out.size() < bytes) {
    int len = 4 + int(rng() % 8);
    for (int i = 0; i < len; ++i) {
      if (i) out += ' ';
      out += kWords[rng() % (sizeof(kWords) / sizeof(kWords[0]))];
    }
    out += ".\n";
  }
  return out;
}

// The "loss" of every record of a --metrics-file.
inline std::vector<double> read_losses(const std::string& path) {
  std::vector<double> out;
  for (const auto& record : read_metrics(path)) out.push_back(record["loss"]);
  return out;
}

// Writes `text` to DIR/NAME.txt and makes the store DIR/NAME from it with
// `moetrain prepare-data`; returns the store's prefix.
inline std::string make_store(const std::string& dir, const std::string& name, const std::string& text) {
  const std::string prefix = dir + "/" + name;
  write_text(prefix + ".txt", text);
  const CommandResult r = run_moetrain("prepare-data --input " + prefix + ".txt --output-prefix " + prefix);
  EXPECT_EQ(r.status, 0) << r.output;
  return prefix;
}
inline std::string make_store(const TempDir& dir, const std::string& name, const std::string& text) {
  return make_store(dir.path(), name, text);
}

}  // namespace mt::test_util
