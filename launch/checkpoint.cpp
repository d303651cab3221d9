#include "launch/checkpoint.h"

#include <fmt/format.h>

#include <fcntl.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <algorithm>
#include <chrono>
#include <ctime>
#include <fstream>
#include <functional>
#include <regex>
#include <thread>

#include "runtime/check.h"
#include "runtime/hdf5_file.h"

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

namespace {

// A save's first phase, collective over topo's world: rank 0 makes
// SAVE/iter_N.tmp anew; returns the time stamp every rank writes (rank 0's clock).
std::string begin_save(const std::string& save_dir, const fs::path& tmp_dir, Topology& topo) {
  if (topo.world_rank() == 0) {
    std::error_code ec;
    fs::create_directories(save_dir, ec);
    MT_CHECK(!ec, "cannot create checkpoint directory {}: {}", save_dir, ec.message());
    fs::remove_all(tmp_dir);
    fs::create_directories(tmp_dir, ec);
    MT_CHECK(!ec, "cannot create {}: {}", tmp_dir.string(), ec.message());
  }
  topo.world().barrier();
  std::string saved_at = topo.world_rank() == 0 ? now_iso8601() : std::string();
  topo.world().broadcast(saved_at, 0);
  return saved_at;
}

// Runs `write` (the file's collective write); a failure removes the
// unfinished directory, so nothing half-written keeps a checkpoint's name
// (`latest` has not moved), and says so when the disk is full.
void write_or_clean_up(const std::function<void()>& write, const std::string& save_dir, const fs::path& tmp_dir,
                       const ModelConfig& model) {
  try {
    write();
  } catch (const Error& e) {
    std::error_code ec;
    const uint64_t free = free_bytes(save_dir), needed = checkpoint_size_estimate(model);
    fs::remove_all(tmp_dir, ec);
    if (free < needed)
      MT_FAIL("no space left on device while writing {}: about {} needed, {} free; the unfinished checkpoint is "
              "removed and {} still names the last complete one ({})",
              (tmp_dir / "checkpoint.h5").string(), megabytes(needed), megabytes(free),
              (fs::path(save_dir) / "latest").string(), e.what());
    throw;
  }
}

// The last phase, on rank 0 once every rank has written: only a complete
// file on disk gets the real name, only then does `latest` move, and older
// checkpoints go only after that. Returns the file's bytes.
uint64_t finish_save(const std::string& save_dir, const fs::path& tmp_dir, int64_t iteration, int keep_last) {
  const fs::path final_dir = fs::path(save_dir) / checkpoint_dir_name(iteration);
  sync_to_disk(tmp_dir / "checkpoint.h5");
  sync_to_disk(tmp_dir);
  const uint64_t bytes = fs::file_size(tmp_dir / "checkpoint.h5");
  const fs::path old_dir = final_dir.string() + ".old";
  fs::remove_all(old_dir);
  if (fs::exists(final_dir)) fs::rename(final_dir, old_dir);
  fs::rename(tmp_dir, final_dir);
  write_text_atomically(fs::path(save_dir) / "latest", std::to_string(iteration));
  fs::remove_all(old_dir);
  if (keep_last > 0) remove_old_checkpoints(save_dir, iteration, keep_last);
  return bytes;
}

// A barrier that sleeps while it waits: the writer thread shares the cores
// with training, which a busy-waiting MPI_Barrier would slow.
void barrier_sleeping(MPI_Comm comm) {
  MPI_Request request = MPI_REQUEST_NULL;
  MPI_CHECK(MPI_Ibarrier(comm, &request));
  for (int done = 0;;) {
    MPI_CHECK(MPI_Test(&request, &done, MPI_STATUS_IGNORE));
    if (done) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

fs::path unfinished_dir(const std::string& save_dir, int64_t iteration) {
  return fs::path(save_dir) / (checkpoint_dir_name(iteration) + ".tmp");
}

}  // namespace

template <typename T>
SaveStats save_checkpoint(const std::string& save_dir, Topology& topo, const ModelConfig& model,
                          Parameters<T>& params, AdamW<float>& optim, GradSync<float>& grad_sync,
                          const TrainState& state, uint64_t seed, const nlohmann::json& config,
                          const nlohmann::json& resume, int keep_last, MasterWeights<T>* master) {
  const double start = MPI_Wtime();
  const fs::path tmp_dir = unfinished_dir(save_dir, state.iteration);
  const std::string saved_at = begin_save(save_dir, tmp_dir, topo);
  write_or_clean_up(
      [&] {
        write_checkpoint_file((tmp_dir / "checkpoint.h5").string(), topo, model, params, optim, grad_sync,
                              {state, seed, config, resume, saved_at}, master);
      },
      save_dir, tmp_dir, model);
  topo.world().barrier();
  SaveStats stats;
  if (topo.world_rank() == 0) stats.bytes = finish_save(save_dir, tmp_dir, state.iteration, keep_last);
  topo.world().barrier();
  stats.seconds = MPI_Wtime() - start;
  return stats;
}

AsyncCheckpointSaver::AsyncCheckpointSaver(Topology& topo, size_t flat_size) : topo_(topo) {
  int provided = 0;
  MPI_CHECK(MPI_Query_thread(&provided));
  MT_CHECK(provided == MPI_THREAD_MULTIPLE,
           "--async-save writes from a thread of its own while training goes on, which needs MPI_THREAD_MULTIPLE; "
           "this MPI library provides thread level {} (of 0 to 3)",
           provided);
  MPI_CHECK(MPI_Comm_dup(topo.world_mpi(), &comm_));
  for (std::vector<float>* buffer : {&snapshot_.weights, &snapshot_.exp_avg, &snapshot_.exp_avg_sq})
    buffer->assign(flat_size, 0.0f);
}

AsyncCheckpointSaver::~AsyncCheckpointSaver() {
  if (writer_.joinable()) writer_.join();
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized && comm_ != MPI_COMM_NULL) MPI_Comm_free(&comm_);
}

std::optional<SaveStats> AsyncCheckpointSaver::wait() {
  if (!writer_.joinable()) return std::nullopt;
  writer_.join();
  return stats_;
}

template <typename T>
double AsyncCheckpointSaver::start(const std::string& save_dir, const ModelConfig& model, Parameters<T>& params,
                                   AdamW<float>& optim, GradSync<float>& grad_sync, const TrainState& state,
                                   uint64_t seed, const nlohmann::json& config, const nlohmann::json& resume,
                                   int keep_last, MasterWeights<T>* master) {
  const double start = MPI_Wtime();
  MT_CHECK(!writer_.joinable(), "an asynchronous save started before the last one was waited for");
  const fs::path tmp_dir = unfinished_dir(save_dir, state.iteration);
  CheckpointAttributes attributes{state, seed, config, resume, begin_save(save_dir, tmp_dir, topo_)};
  snapshot_checkpoint(params, optim, grad_sync, master, snapshot_);
  // What the writer reads of `params` (the tensor table) and of `topo_`
  // (coordinates and sizes) does not change while training goes on.
  writer_ = std::thread([this, save_dir, tmp_dir, model, &params, keep_last, start,
                         attributes = std::move(attributes)] {
    try {
      write_or_clean_up(
          [&] {
            write_checkpoint_snapshot((tmp_dir / "checkpoint.h5").string(), comm_, topo_, model, params,
                                      snapshot_, attributes);
          },
          save_dir, tmp_dir, model);
      barrier_sleeping(comm_);
      stats_ = {};
      if (topo_.world_rank() == 0) stats_.bytes = finish_save(save_dir, tmp_dir, attributes.state.iteration, keep_last);
      barrier_sleeping(comm_);
      stats_.seconds = MPI_Wtime() - start;
    } catch (const std::exception& e) {
      // As a failed synchronous save: the job ends, on every rank.
      fmt::print(stderr, "moetrain: error: the background save of iteration {} failed: {}\n",
                 attributes.state.iteration, e.what());
      std::fflush(stderr);
      MPI_Abort(MPI_COMM_WORLD, 1);
    }
  });
  return MPI_Wtime() - start;
}

template SaveStats save_checkpoint<float>(const std::string&, Topology&, const ModelConfig&, Parameters<float>&,
                                          AdamW<float>&, GradSync<float>&, const TrainState&, uint64_t,
                                          const nlohmann::json&, const nlohmann::json&, int, MasterWeights<float>*);
template SaveStats save_checkpoint<bf16>(const std::string&, Topology&, const ModelConfig&, Parameters<bf16>&,
                                         AdamW<float>&, GradSync<float>&, const TrainState&, uint64_t,
                                         const nlohmann::json&, const nlohmann::json&, int, MasterWeights<bf16>*);

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

template double AsyncCheckpointSaver::start<float>(const std::string&, const ModelConfig&, Parameters<float>&,
                                                   AdamW<float>&, GradSync<float>&, const TrainState&, uint64_t,
                                                   const nlohmann::json&, const nlohmann::json&, int,
                                                   MasterWeights<float>*);
template double AsyncCheckpointSaver::start<bf16>(const std::string&, const ModelConfig&, Parameters<bf16>&,
                                                  AdamW<float>&, GradSync<float>&, const TrainState&, uint64_t,
                                                  const nlohmann::json&, const nlohmann::json&, int,
                                                  MasterWeights<bf16>*);

}  // namespace mt
