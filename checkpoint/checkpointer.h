// When a run saves and what it resumes from, as torchtitan's
// CheckpointManager: every --save-interval steps and at the end (or at a
// stop signal), synchronously or in the background (--async-save), keeping
// the newest --keep-last; and --load's newest intact checkpoint. The
// training loop calls save(step, force) once a step and load() at start-up.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "checkpoint/async_saver.h"
#include "checkpoint/checkpoint_file.h"

namespace mt {

struct CheckpointPolicy {
  std::string save_dir;  // --save; empty: never save
  int64_t interval = 0;  // --save-interval; 0: only the run's last save
  int keep_last = 0;     // --keep-last; 0: keep every checkpoint
  bool async = false;    // --async-save
};

// What a checkpoint holds of one rank's training: its share of the model
// and of the optimizer. master: the optimizer's float32 weights (required
// under bf16, write_checkpoint_file); router: what routing keeps between
// steps.
template <typename T>
struct CheckpointedState {
  Topology& topo;
  const ModelConfig& model;
  Parameters<T>& params;
  AdamW<float>& optim;
  GradSync<float>& grad_sync;
  MasterWeights<T>* master = nullptr;
  StageRouterState router = {};
};

template <typename T>
class Checkpointer {
 public:
  // describe: the root attributes of a save of the current step (where the
  // run stands, its configuration, what a resume needs); called only when
  // a save happens.
  Checkpointer(const CheckpointPolicy& policy, const CheckpointedState<T>& state,
               std::function<CheckpointAttributes()> describe);

  // Collective, before the first step: the save directory must be
  // writable with room for one checkpoint, so that a wrong path or a full
  // disk fails in seconds rather than at the first save. Rank 0 looks;
  // every rank fails alike.
  void check_save_dir();
  // Collective. Saves when `step` is a multiple of the interval, or when
  // forced: the run's last save, which is synchronous (nothing is left to
  // overlap it). Never saves one step twice, nor without a save directory.
  // A save waits for the background save before it; rank 0 says what it
  // did.
  void save(int64_t step, bool force = false);
  // Waits for the background save in flight, if any, and says when it
  // finished.
  void wait();

  struct Loaded {
    CheckpointInfo info;
    std::string context_change;  // " seq_length: checkpoint 1024 vs run 4096;" ... or ""
  };
  // Collective: loads the weights, the moments of this rank's shard and
  // Adam's step from the newest intact checkpoint `load` names
  // (load_newest_intact). Its model must be this run's, but for the context
  // (sequence length, RoPE, document resets: docs/design.md section 9),
  // whose changes are returned; any other difference is an error naming
  // each field.
  Loaded load(const std::string& load);

 private:
  // A save begun at MPI_Wtime() `start`, written now or by the saver.
  void save_now(const PendingSave& pending, const CheckpointAttributes& attributes, double start);
  void save_in_background(const PendingSave& pending, const CheckpointAttributes& attributes, double start);

  CheckpointPolicy policy_;
  CheckpointedState<T> state_;
  std::function<CheckpointAttributes()> describe_;
  std::unique_ptr<AsyncCheckpointSaver> saver_;  // --async-save
  int64_t saved_step_ = -1;                      // the last save's, finished or in flight
  bool root_;
};

extern template class Checkpointer<float>;
extern template class Checkpointer<bf16>;

}  // namespace mt
