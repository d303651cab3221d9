#include "checkpoint/checkpointer.h"

#include <fmt/format.h>

#include <chrono>
#include <cstdio>

#include "runtime/check.h"

namespace mt {

namespace {

// A checkpoint of another model shape cannot be resumed: names every field
// that differs. The context (sequence length, RoPE, document resets) may
// change: its changes are returned.
std::string check_same_model(const ModelConfig& ours, const ModelConfig& saved, const std::string& path) {
  const nlohmann::json mine = model_config_to_json(ours), theirs = model_config_to_json(saved);
  std::string diffs, context;
  for (const auto& [key, value] : mine.items()) {
    if (theirs.at(key) == value) continue;
    std::string& list = is_context_key(key) ? context : diffs;
    list += fmt::format(" {}: checkpoint {} vs run {};", key, theirs.at(key).dump(), value.dump());
  }
  MT_CHECK(diffs.empty(), "checkpoint {} is of a different model:{}", path, diffs);
  return context;
}

}  // namespace

template <typename T>
Checkpointer<T>::Checkpointer(const CheckpointPolicy& policy, const CheckpointedState<T>& state,
                              std::function<CheckpointAttributes()> describe)
    : policy_(policy), state_(state), describe_(std::move(describe)), root_(state.topo.world_rank() == 0) {
  if (policy.async && !policy.save_dir.empty())
    saver_ = std::make_unique<AsyncCheckpointSaver>(state.topo, state.params.padded_size());
}

template <typename T>
void Checkpointer<T>::check_save_dir() {
  if (policy_.save_dir.empty()) return;
  std::string problem = root_ ? save_dir_problem(policy_.save_dir, checkpoint_size_estimate(state_.model)) : "";
  state_.topo.world().broadcast(problem, 0);
  MT_CHECK(problem.empty(), "{}", problem);
}

template <typename T>
void Checkpointer<T>::save(int64_t step, bool force) {
  const bool due = force || (policy_.interval > 0 && step % policy_.interval == 0);
  if (!due || policy_.save_dir.empty() || saved_step_ == step) return;
  wait();
  const double start = MPI_Wtime();
  const PendingSave pending = begin_save(policy_.save_dir, step, state_.topo);
  CheckpointAttributes attributes = describe_();
  attributes.saved_at = pending.saved_at;
  if (saver_ && !force)
    save_in_background(pending, attributes, start);
  else
    save_now(pending, attributes, start);
  saved_step_ = step;
}

template <typename T>
void Checkpointer<T>::save_now(const PendingSave& pending, const CheckpointAttributes& attributes, double start) {
  const CheckpointedState<T>& s = state_;
  write_or_clean_up(pending, s.model, [&] {
    write_checkpoint_file(pending.file(), s.topo, s.model, s.params, s.optim, s.grad_sync, attributes, s.master,
                          s.router);
  });
  s.topo.world().barrier();
  uint64_t bytes = 0;
  if (root_) bytes = publish_save(pending, policy_.keep_last);
  s.topo.world().barrier();
  const double seconds = MPI_Wtime() - start;
  if (!root_) return;
  fmt::print("saved checkpoint {}/{} in {:.3f} s ({:.2f} GB/s)\n", policy_.save_dir,
             checkpoint_dir_name(pending.iteration), seconds, double(bytes) / seconds / 1e9);
  std::fflush(stdout);
}

template <typename T>
void Checkpointer<T>::save_in_background(const PendingSave& pending, const CheckpointAttributes& attributes,
                                         double start) {
  const CheckpointedState<T>& s = state_;
  saver_->start(pending, policy_.keep_last, start, s.model, s.params, s.optim, s.grad_sync, s.master, s.router,
                attributes);
  if (!root_) return;
  fmt::print("saving checkpoint {}/{} in the background (the snapshot took {:.3f} s)\n", policy_.save_dir,
             checkpoint_dir_name(pending.iteration), MPI_Wtime() - start);
}

template <typename T>
void Checkpointer<T>::wait() {
  if (!saver_) return;
  const auto start = std::chrono::steady_clock::now();
  const std::optional<SaveStats> saved = saver_->wait();
  const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (!saved || !root_) return;
  fmt::print("saved checkpoint {}/{} in the background in {:.3f} s ({:.2f} GB/s); waited {:.3f} s for it\n",
             policy_.save_dir, checkpoint_dir_name(saved_step_), saved->seconds,
             double(saved->bytes) / saved->seconds / 1e9, waited);
  std::fflush(stdout);
}

template <typename T>
typename Checkpointer<T>::Loaded Checkpointer<T>::load(const std::string& load) {
  const CheckpointedState<T>& s = state_;
  Loaded loaded;
  load_newest_intact(load, s.topo.world(), [&](const std::string& path) {
    loaded.info = read_checkpoint_info(path, s.topo.world_mpi());
    loaded.context_change = check_same_model(s.model, loaded.info.model, path);
    load_checkpoint(path, s.topo.world_mpi(), s.params, &s.optim, &s.grad_sync, s.master, s.router);
  });
  return loaded;
}

template class Checkpointer<float>;
template class Checkpointer<bf16>;

}  // namespace mt
