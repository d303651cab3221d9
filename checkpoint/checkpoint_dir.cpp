#include "checkpoint/checkpoint_dir.h"

#include <fmt/format.h>

#include <fcntl.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <fstream>
#include <regex>

#include "checkpoint/checkpoint_file.h"
#include "checkpoint/hdf5_file.h"
#include "runtime/check.h"

namespace fs = std::filesystem;

namespace mt {

std::string checkpoint_dir_name(int64_t iteration) { return fmt::format("iter_{:07d}", iteration); }

uint64_t checkpoint_size_estimate(const ModelConfig& model) {
  return uint64_t(model.num_parameters()) * 3 * sizeof(float) + (uint64_t(1) << 20);
}

namespace {

// Bytes free to this process on the file system holding path.
uint64_t free_bytes(const fs::path& path) {
  struct statvfs s {};
  if (::statvfs(path.c_str(), &s) != 0) return UINT64_MAX;  // unknown: do not claim it is full
  return uint64_t(s.f_bavail) * uint64_t(s.f_frsize);
}

std::string megabytes(uint64_t bytes) { return fmt::format("{:.1f} MB", double(bytes) / 1e6); }

}  // namespace

std::string save_dir_problem(const std::string& save_dir, uint64_t bytes) {
  std::error_code ec;
  fs::create_directories(save_dir, ec);
  if (ec) return fmt::format("--save {}: cannot create it: {}", save_dir, ec.message());
  const fs::path probe = fs::path(save_dir) / ".write_test";
  {
    std::ofstream out(probe);
    out << "moetrain\n";
    out.flush();
    if (!out.good()) return fmt::format("--save {}: cannot write in it", save_dir);
  }
  fs::remove(probe, ec);
  const uint64_t free = free_bytes(save_dir);
  if (free < bytes)
    return fmt::format("--save {}: {} free on its file system, a checkpoint of this model needs about {}", save_dir,
                       megabytes(free), megabytes(bytes));
  return "";
}

namespace {

// Forces a file's (or a directory's entries') data to disk, so that what a
// rename publishes survives a crash of the machine too.
void sync_to_disk(const fs::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  MT_CHECK(fd >= 0, "cannot open {} to sync it: {}", path.string(), std::strerror(errno));
  const int rc = ::fsync(fd);
  ::close(fd);
  MT_CHECK(rc == 0, "cannot sync {} to disk: {}", path.string(), std::strerror(errno));
}

void write_text_atomically(const fs::path& path, const std::string& text) {
  const fs::path tmp = path.string() + ".tmp";
  {
    std::ofstream out(tmp);
    out << text << "\n";
    out.flush();
    MT_CHECK(out.good(), "cannot write {}", tmp.string());
  }
  sync_to_disk(tmp);
  fs::rename(tmp, path);
  sync_to_disk(path.parent_path());
}

// The iterations of the complete checkpoint directories in save_dir
// (iter_NNNNNNN, not .tmp or .old), newest first.
std::vector<int64_t> checkpoint_iterations(const fs::path& save_dir) {
  std::vector<int64_t> found;
  const std::regex name("iter_(\\d{7})");
  std::smatch m;
  for (const auto& entry : fs::directory_iterator(save_dir)) {
    const std::string dir = entry.path().filename().string();
    if (entry.is_directory() && std::regex_match(dir, m, name)) found.push_back(std::stoll(m[1]));
  }
  std::sort(found.rbegin(), found.rend());
  return found;
}

// Keeps the newest keep_last checkpoints up to `newest` (the one just
// saved). Directories beyond it (an unfinished save of an earlier attempt)
// are neither counted nor removed: they never displace a complete one.
void remove_old_checkpoints(const fs::path& save_dir, int64_t newest, int keep_last) {
  int kept = 0;
  for (int64_t iteration : checkpoint_iterations(save_dir))
    if (iteration <= newest && ++kept > keep_last) fs::remove_all(save_dir / checkpoint_dir_name(iteration));
}

std::string now_iso8601() {
  const std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return buf;
}

}  // namespace

PendingSave begin_save(const std::string& save_dir, int64_t iteration, Topology& topo) {
  PendingSave save{save_dir, iteration, fs::path(save_dir) / (checkpoint_dir_name(iteration) + ".tmp"), ""};
  if (topo.world_rank() == 0) {
    std::error_code ec;
    fs::create_directories(save_dir, ec);
    MT_CHECK(!ec, "cannot create checkpoint directory {}: {}", save_dir, ec.message());
    fs::remove_all(save.tmp_dir);
    fs::create_directories(save.tmp_dir, ec);
    MT_CHECK(!ec, "cannot create {}: {}", save.tmp_dir.string(), ec.message());
  }
  topo.world().barrier();
  if (topo.world_rank() == 0) save.saved_at = now_iso8601();
  topo.world().broadcast(save.saved_at, 0);
  return save;
}

void write_or_clean_up(const PendingSave& save, const ModelConfig& model, const std::function<void()>& write) {
  try {
    write();
  } catch (const Error& e) {
    std::error_code ec;
    const uint64_t free = free_bytes(save.save_dir), needed = checkpoint_size_estimate(model);
    fs::remove_all(save.tmp_dir, ec);
    if (free < needed)
      MT_FAIL("no space left on device while writing {}: about {} needed, {} free; the unfinished checkpoint is "
              "removed and {} still names the last complete one ({})",
              save.file(), megabytes(needed), megabytes(free), (fs::path(save.save_dir) / "latest").string(),
              e.what());
    throw;
  }
}

uint64_t publish_save(const PendingSave& save, int keep_last) {
  const fs::path final_dir = fs::path(save.save_dir) / checkpoint_dir_name(save.iteration);
  sync_to_disk(save.file());
  sync_to_disk(save.tmp_dir);
  const uint64_t bytes = fs::file_size(save.file());
  const fs::path old_dir = final_dir.string() + ".old";
  fs::remove_all(old_dir);
  if (fs::exists(final_dir)) fs::rename(final_dir, old_dir);
  fs::rename(save.tmp_dir, final_dir);
  write_text_atomically(fs::path(save.save_dir) / "latest", std::to_string(save.iteration));
  fs::remove_all(old_dir);
  if (keep_last > 0) remove_old_checkpoints(save.save_dir, save.iteration, keep_last);
  return bytes;
}


std::string resolve_checkpoint(const std::string& load, std::vector<std::string>* warnings,
                               const std::vector<std::string>& damaged) {
  const fs::path p(load);
  MT_CHECK(fs::exists(p), "checkpoint {}: no such file or directory", load);
  if (fs::is_regular_file(p)) return p.string();
  if (fs::exists(p / "checkpoint.h5")) return (p / "checkpoint.h5").string();
  const fs::path latest = p / "latest";
  MT_CHECK(fs::exists(latest), "checkpoint {}: neither a checkpoint.h5 nor a 'latest' file in it", load);
  std::ifstream in(latest);
  int64_t newest = -1;
  in >> newest;
  MT_CHECK(in && newest >= 0, "checkpoint {}: cannot read an iteration from {}", load, latest.string());
  auto warn = [&](std::string w) {
    if (warnings) warnings->push_back(std::move(w));
  };
  for (int64_t iteration : checkpoint_iterations(p)) {
    const fs::path file = p / checkpoint_dir_name(iteration) / "checkpoint.h5";
    if (iteration > newest) {
      warn(fmt::format("{} is newer than 'latest' ({}): its save did not finish; not used", file.string(), newest));
      continue;
    }
    if (std::find(damaged.begin(), damaged.end(), file.string()) != damaged.end()) continue;  // said already
    const std::string problem = fs::exists(file) ? checkpoint_problem(file.string()) : "it is missing";
    if (problem.empty()) return file.string();
    warn(fmt::format("{} cannot be resumed from ({}); trying the one before it", file.string(), problem));
  }
  MT_FAIL("checkpoint {}: no complete checkpoint at or before iteration {} ('latest')", load, newest);
}

std::string resolve_checkpoint(const std::string& load, Communicator& world, const std::vector<std::string>& damaged) {
  std::string path;
  if (world.rank() == 0) {
    std::vector<std::string> warnings;
    path = resolve_checkpoint(load, &warnings, damaged);
    for (const std::string& w : warnings) fmt::print("warning: {}\n", w);
    std::fflush(stdout);
  }
  world.broadcast(path, 0);
  return path;
}

std::string load_newest_intact(const std::string& load, Communicator& world,
                               const std::function<void(const std::string& path)>& load_path) {
  const bool save_dir = fs::is_directory(load) && !fs::exists(fs::path(load) / "checkpoint.h5");
  std::vector<std::string> damaged;
  for (;;) {
    const std::string path = resolve_checkpoint(load, world, damaged);
    try {
      load_path(path);
      return path;
    } catch (const DamagedFile& e) {
      // Thrown on every rank alike (H5File::verify_unread_blocks).
      if (!save_dir) MT_FAIL("refusing checkpoint {}: {}", path, e.what());
      if (world.rank() == 0) fmt::print("warning: {}; trying the one before it\n", e.what());
      damaged.push_back(path);
    }
  }
}

}  // namespace mt
