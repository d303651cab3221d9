#include "checkpoint/async_saver.h"

#include <fmt/format.h>

#include <chrono>
#include <cstdio>

#include "runtime/check.h"

namespace mt {

namespace {

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

}  // namespace

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
void AsyncCheckpointSaver::start(const PendingSave& save, int keep_last, double started, const ModelConfig& model,
                                   Parameters<T>& params, AdamW<float>& optim, GradSync<float>& grad_sync,
                                   MasterWeights<T>* master, const StageRouterState& router,
                                   const CheckpointAttributes& attributes) {
  MT_CHECK(!writer_.joinable(), "an asynchronous save started before the last one was waited for");
  snapshot_checkpoint(params, optim, grad_sync, master, router, snapshot_);
  // What the writer reads of `params` (the tensor table) and of `topo_`
  // (coordinates and sizes) does not change while training goes on.
  writer_ = std::thread([this, save, model, &params, keep_last, started, attributes] {
    try {
      write_or_clean_up(save, model, [&] {
        write_checkpoint_snapshot(save.file(), comm_, topo_, model, params, snapshot_, attributes);
      });
      barrier_sleeping(comm_);
      stats_ = {};
      if (topo_.world_rank() == 0) stats_.bytes = publish_save(save, keep_last);
      barrier_sleeping(comm_);
      stats_.seconds = MPI_Wtime() - started;
    } catch (const std::exception& e) {
      // As a failed synchronous save: the job ends, on every rank.
      fmt::print(stderr, "moetrain: error: the background save of iteration {} failed: {}\n", save.iteration,
                 e.what());
      std::fflush(stderr);
      MPI_Abort(MPI_COMM_WORLD, 1);
    }
  });
}

#define MT_INSTANTIATE_ASYNC_SAVER(T)                                                                           \
  template void AsyncCheckpointSaver::start<T>(const PendingSave&, int, double, const ModelConfig&,            \
                                               Parameters<T>&, AdamW<float>&, GradSync<float>&,                \
                                               MasterWeights<T>*, const StageRouterState&,                     \
                                               const CheckpointAttributes&);
MT_INSTANTIATE_ASYNC_SAVER(float)
MT_INSTANTIATE_ASYNC_SAVER(bf16)

}  // namespace mt
