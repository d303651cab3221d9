// Where checkpoints live and which one to load: SAVE/iter_NNNNNNN/checkpoint.h5
// (the file is checkpoint/checkpoint_file.h's) and SAVE/latest naming the
// newest complete one. A checkpoint is written into a temporary directory
// and renamed into place once complete, and `latest` is replaced by rename
// after that, so a crash never leaves a half checkpoint under a real name.
#pragma once

#include <nlohmann/json.hpp>

#include <mpi.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "checkpoint/checkpoint_file.h"

namespace mt {

std::string checkpoint_dir_name(int64_t iteration);  // "iter_0000042"

// Bytes a checkpoint of this model takes: the float32 weights and both Adam
// moments of every parameter, and a margin for HDF5's metadata.
uint64_t checkpoint_size_estimate(const ModelConfig& model);

// Why --save DIR cannot take a checkpoint of `bytes` (it cannot be created
// or written, or its file system has too little room), or "". Creates DIR.
std::string save_dir_problem(const std::string& save_dir, uint64_t bytes);

struct SaveStats {
  double seconds = 0.0;  // from the first rank entering to `latest` replaced
  uint64_t bytes = 0;    // of the file
};

// Collective over topo.world(): writes SAVE/iter_NNNNNNN (write_checkpoint_file)
// and moves `latest` to it. A failed write removes the unfinished
// iter_NNNNNNN.tmp and throws, saying so when the disk is full; `latest`
// and the older checkpoints stay as they were. `config` is the full run configuration; each
// entry of `resume` (the schedule, ramp-up, data and RNG positions) becomes
// a root attribute holding its JSON. keep_last > 0: afterwards, only the
// newest keep_last checkpoints are kept.
// master: the optimizer's weights (required under bf16, write_checkpoint_file).
template <typename T>
SaveStats save_checkpoint(const std::string& save_dir, Topology& topo, const ModelConfig& model,
                          Parameters<T>& params, AdamW<float>& optim, GradSync<float>& grad_sync,
                          const TrainState& state, uint64_t seed, const nlohmann::json& config,
                          const nlohmann::json& resume, int keep_last = 0, MasterWeights<T>* master = nullptr);

// --async-save (Megatron's flag): a save that writes while training goes on.
// start() takes a snapshot of what the checkpoint holds (the moments'
// all-gather included) on the training thread, then writes the file as
// save_checkpoint does, the same bytes, from a thread of its own over a
// duplicate of the world communicator (so MPI must provide
// MPI_THREAD_MULTIPLE); `latest` moves only when the file is complete. The
// caller waits for a save before the next one and at the end. A failure in
// the background ends the job on every rank, as a failed save does.
class AsyncCheckpointSaver {
 public:
  // flat_size: Parameters::padded_size(); the snapshot's buffers are
  // allocated (and their pages touched) here, once.
  AsyncCheckpointSaver(Topology& topo, size_t flat_size);
  ~AsyncCheckpointSaver();  // waits for the save in flight
  AsyncCheckpointSaver(const AsyncCheckpointSaver&) = delete;
  AsyncCheckpointSaver& operator=(const AsyncCheckpointSaver&) = delete;

  // Collective over topo's world, with save_checkpoint's arguments; returns
  // the seconds the caller spent (the snapshot).
  template <typename T>
  double start(const std::string& save_dir, const ModelConfig& model, Parameters<T>& params, AdamW<float>& optim,
               GradSync<float>& grad_sync, const TrainState& state, uint64_t seed, const nlohmann::json& config,
               const nlohmann::json& resume, int keep_last, MasterWeights<T>* master);
  // Waits for the save in flight: its stats (seconds from start() to
  // `latest` moved), or nothing when none was.
  std::optional<SaveStats> wait();

 private:
  Topology& topo_;
  MPI_Comm comm_ = MPI_COMM_NULL;  // the writer's
  std::thread writer_;
  CheckpointSnapshot snapshot_;  // what the writer writes; refilled once it is done
  SaveStats stats_;
};

// The checkpoint file a --load argument means: a checkpoint.h5, an
// iter_NNNNNNN directory, or a save directory. In a save directory, the
// newest complete checkpoint: the one `latest` names or, when that file is
// truncated or corrupted, the newest readable one before it; a checkpoint
// newer than `latest` (its save did not finish) is skipped. Each skip is
// described in *warnings. Throws naming what is missing. Reads files; call
// it on one rank and share the answer. The checkpoints in `damaged` (found
// so while loading) are passed over too.
std::string resolve_checkpoint(const std::string& load, std::vector<std::string>* warnings = nullptr,
                               const std::vector<std::string>& damaged = {});

// Collective: rank 0 of `world` resolves --load and prints a warning for
// each checkpoint it skipped; every rank gets the path.
std::string resolve_checkpoint(const std::string& load, Communicator& world,
                               const std::vector<std::string>& damaged = {});

// Collective: calls load_path on every rank with the checkpoint --load
// names and returns its path. When loading finds it damaged (DamagedFile: a
// block that does not match its checksum), a checkpoint named directly is
// refused with an error naming the damage; in a save directory the damage
// is reported and the newest intact checkpoint before it loaded instead.
std::string load_newest_intact(const std::string& load, Communicator& world,
                               const std::function<void(const std::string& path)>& load_path);

}  // namespace mt
