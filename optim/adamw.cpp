#include "optim/adamw.h"

#include <algorithm>
#include <cmath>

#include "runtime/check.h"

namespace mt {

void validate(const AdamWConfig& c) {
  MT_CHECK(c.beta1 >= 0 && c.beta1 < 1, "--adam-beta1 must lie in [0, 1), got {}", c.beta1);
  MT_CHECK(c.beta2 >= 0 && c.beta2 < 1, "--adam-beta2 must lie in [0, 1), got {}", c.beta2);
  MT_CHECK(c.eps > 0, "--adam-eps must be positive, got {}", c.eps);
  MT_CHECK(c.weight_decay >= 0, "--weight-decay must be >= 0, got {}", c.weight_decay);
  MT_CHECK(c.clip_grad >= 0, "--clip-grad must be >= 0, got {}", c.clip_grad);
}

std::vector<ShardSegment> shard_segments(const std::vector<ParamTensor>& tensors,
                                         const std::vector<FlatRange>& shard, int tp_rank) {
  std::vector<ShardSegment> segments;
  size_t packed = 0;  // where the current range starts in the shard buffers
  for (const FlatRange& r : shard) {
    for (const ParamTensor& t : tensors) {
      const size_t begin = std::max(r.begin, t.offset), end = std::min(r.end, t.offset + t.numel);
      if (begin >= end) continue;
      segments.push_back({begin, packed + (begin - r.begin), end - begin, t.weight_decay,
                          !t.replicated() || tp_rank == 0});
    }
    packed += r.size();
  }
  return segments;
}

template <typename T>
AdamW<T>::AdamW(Backend<T>& be, const AdamWConfig& cfg, std::vector<ShardSegment> segments,
                size_t shard_size, std::vector<ProcessGroup> norm_groups)
    : be_(be), cfg_(cfg), segments_(std::move(segments)), norm_groups_(std::move(norm_groups)),
      exp_avg_(be, shard_size), exp_avg_sq_(be, shard_size) {
  be.fill(exp_avg_.data(), T(0), shard_size);
  be.fill(exp_avg_sq_.data(), T(0), shard_size);
}

template <typename T>
AdamW<T>::AdamW(Backend<T>& be, const AdamWConfig& cfg, const Parameters<T>& p,
                const ProcessGroup& tp, const ProcessGroup& pipeline)
    : AdamW(be, cfg, shard_segments(p.tensors, {{0, p.size()}}, tp.rank), p.size(), {tp, pipeline}) {}

template <typename T>
double AdamW<T>::grad_norm(const T* grads) {
  double sum = 0.0;
  for (const ShardSegment& s : segments_)
    if (s.in_norm) sum += be_.sum_squares(s.count, grads + s.shard);
  for (const ProcessGroup& group : norm_groups_) group.all_reduce_sum(&sum, 1);
  return std::sqrt(sum);
}

template <typename T>
double AdamW<T>::step(T* values, const T* grads, double lr, bool packed) {
  const double norm = grad_norm(grads);
  MT_CHECK(std::isfinite(norm), "gradient norm is {} at Adam step {}: the loss diverged", norm,
           step_ + 1);
  update(values, grads, lr, norm, packed);
  return norm;
}

template <typename T>
void AdamW<T>::update(T* values, const T* grads, double lr, double norm, bool packed) {
  ++step_;
  AdamWStep step{.lr = lr,
                 .beta1 = cfg_.beta1,
                 .beta2 = cfg_.beta2,
                 .eps = cfg_.eps,
                 .weight_decay = 0.0,
                 .bc1 = 1.0 - std::pow(cfg_.beta1, double(step_)),
                 .bc2 = 1.0 - std::pow(cfg_.beta2, double(step_))};
  if (cfg_.clip_grad > 0) step.grad_scale = std::min(1.0, cfg_.clip_grad / (norm + 1e-6));
  for (const ShardSegment& s : segments_) {
    step.weight_decay = s.weight_decay ? cfg_.weight_decay : 0.0;
    be_.adamw(values + (packed ? s.shard : s.flat), grads + s.shard, exp_avg_.data() + s.shard,
              exp_avg_sq_.data() + s.shard, s.count, step);
  }
}

template class AdamW<float>;
template class AdamW<double>;

}  // namespace mt
