// --async-save (Megatron's flag): a save that writes while training goes on.
// start() takes a snapshot of what the checkpoint holds (the moments'
// all-gather included) on the training thread, then writes the file as a
// synchronous save does, the same bytes, from a thread of its own over a
// duplicate of the world communicator (so MPI must provide
// MPI_THREAD_MULTIPLE); `latest` moves only when the file is complete. The
// caller waits for a save before the next one and at the end. A failure in
// the background ends the job on every rank, as a failed save does.
#pragma once

#include <mpi.h>

#include <optional>
#include <thread>

#include "checkpoint/checkpoint_dir.h"
#include "checkpoint/checkpoint_file.h"

namespace mt {

struct SaveStats {
  double seconds = 0.0;  // from the first rank entering to `latest` replaced
  uint64_t bytes = 0;    // of the file
};

class AsyncCheckpointSaver {
 public:
  // flat_size: Parameters::padded_size(); the snapshot's buffers are
  // allocated (and their pages touched) here, once.
  AsyncCheckpointSaver(Topology& topo, size_t flat_size);
  ~AsyncCheckpointSaver();  // waits for the save in flight
  AsyncCheckpointSaver(const AsyncCheckpointSaver&) = delete;
  AsyncCheckpointSaver& operator=(const AsyncCheckpointSaver&) = delete;

  // Collective over topo's world: snapshots the state and writes `save`
  // (begun, begin_save) in the background; `started` (MPI_Wtime) is when
  // the save began.
  template <typename T>
  void start(const PendingSave& save, int keep_last, double started, const ModelConfig& model,
               Parameters<T>& params, AdamW<float>& optim, GradSync<float>& grad_sync, MasterWeights<T>* master,
               const StageRouterState& router, const CheckpointAttributes& attributes);
  // Waits for the save in flight: its stats (seconds from its start to
  // `latest` moved), or nothing when none was.
  std::optional<SaveStats> wait();

 private:
  Topology& topo_;
  MPI_Comm comm_ = MPI_COMM_NULL;  // the writer's
  std::thread writer_;
  CheckpointSnapshot snapshot_;  // what the writer writes; refilled once it is done
  SaveStats stats_;
};

}  // namespace mt
