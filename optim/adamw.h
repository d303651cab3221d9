// AdamW over the part of the model's flat parameter buffer this rank
// updates (all of it, or its ZeRO-1 shard), with global gradient-norm
// clipping. Decoupled weight decay applies to tensors of two or more
// dimensions only (docs/design.md section 4). Adam's step count starts at 1.
// T is the optimizer's type (float32; float64 in the gradient checks): the
// weights it updates are the model's own in float32 runs, or the float32
// master weights of the shard under bf16 (optim/master_weights.h).
#pragma once

#include <cstdint>
#include <vector>

#include "model/parameters.h"
#include "parallel/grad_sync.h"
#include "runtime/backend.h"

namespace mt {

struct AdamWConfig {
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0.1;
  double clip_grad = 1.0;  // 0 disables clipping
};

void validate(const AdamWConfig& cfg);

// A run of elements this rank updates: flat[flat, flat + count) of one
// tensor, whose gradients and moments lie at [shard, shard + count) of the
// shard-packed buffers.
struct ShardSegment {
  size_t flat = 0, shard = 0, count = 0;
  bool weight_decay = false;
  // Counted in the gradient norm: a tensor every TP rank holds whole is
  // counted on TP rank 0 only, so each logical element counts once.
  bool in_norm = true;
};

// The flat ranges of `shard` (packed back to back) cut at tensor
// boundaries; padding beyond the last tensor belongs to none and is left out.
std::vector<ShardSegment> shard_segments(const std::vector<ParamTensor>& tensors,
                                         const std::vector<FlatRange>& shard, int tp_rank);

template <typename T>
class AdamW {
 public:
  // segments, shard_size: what this rank updates. norm_groups: the groups
  // whose ranks hold the rest of the model (TP, PP, DP); the squared norm is
  // summed over each.
  AdamW(Backend<T>& be, const AdamWConfig& cfg, std::vector<ShardSegment> segments, size_t shard_size,
        std::vector<ProcessGroup> norm_groups);
  // Every parameter of p, on one replica: tp holds the other TP shards,
  // pipeline the other stages.
  AdamW(Backend<T>& be, const AdamWConfig& cfg, const Parameters<T>& p, const ProcessGroup& tp = {},
        const ProcessGroup& pipeline = {});

  // Global L2 norm of the gradients, each logical element counted once.
  // grads: [shard_size], shard-packed.
  double grad_norm(const T* grads);
  // Updates the shard's segments of `values`: flat (the model's padded
  // buffer) or, when packed, shard-packed like the grads (master weights),
  // with the gradients clipped (scaled by clip / (norm + 1e-6) when below 1,
  // as they are read: `grads` is left as it is). Returns the pre-clip norm.
  double step(T* values, const T* grads, double lr, bool packed = false);
  // The same update with the norm already taken (grad_norm, collective),
  // for a caller that first decides whether the step may update at all.
  void update(T* values, const T* grads, double lr, double norm, bool packed = false);
  double step(Parameters<T>& p, double lr) { return step(p.values.data(), p.grads.data(), lr); }

  int64_t step_count() const { return step_; }
  void set_step_count(int64_t s) { step_ = s; }
  size_t shard_size() const { return exp_avg_.size(); }
  DeviceBuffer<T>& exp_avg() { return exp_avg_; }  // [shard_size], shard-packed
  DeviceBuffer<T>& exp_avg_sq() { return exp_avg_sq_; }

 private:
  Backend<T>& be_;
  AdamWConfig cfg_;
  std::vector<ShardSegment> segments_;
  std::vector<ProcessGroup> norm_groups_;
  int64_t step_ = 0;
  DeviceBuffer<T> exp_avg_, exp_avg_sq_;
};

extern template class AdamW<float>;
extern template class AdamW<double>;

}  // namespace mt
