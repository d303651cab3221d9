// AdamW over the model's flat parameter buffer, with global gradient-norm
// clipping. Decoupled weight decay applies to tensors of two or more
// dimensions only (DESIGN.md section 4). Adam's step count starts at 1.
#pragma once

#include <cstdint>
#include <vector>

#include "model/parameters.h"
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

template <typename T>
class AdamW {
 public:
  // tp: the group whose ranks hold the other shards of the parameters;
  // pipeline: the group whose ranks hold the other layers (null: one stage).
  AdamW(Backend<T>& be, const AdamWConfig& cfg, size_t num_params, const TensorParallel& tp = {},
        Communicator* pipeline = nullptr);

  // Global L2 norm of the gradients, each logical element counted once:
  // split tensors summed over the TP group, tensors every TP rank holds
  // whole counted on TP rank 0 only, stages summed over the pipeline.
  double grad_norm(const Parameters<T>& p);
  // Clips (scale = clip / (norm + 1e-6) when below 1), then updates every
  // tensor. Returns the pre-clip gradient norm.
  double step(Parameters<T>& p, double lr);

  int64_t step_count() const { return step_; }
  void set_step_count(int64_t s) { step_ = s; }
  DeviceBuffer<T>& exp_avg() { return exp_avg_; }
  DeviceBuffer<T>& exp_avg_sq() { return exp_avg_sq_; }

 private:
  Backend<T>& be_;
  AdamWConfig cfg_;
  TensorParallel tp_;
  Communicator* pipeline_;
  int64_t step_ = 0;
  DeviceBuffer<T> exp_avg_, exp_avg_sq_;
};

extern template class AdamW<float>;
extern template class AdamW<double>;

}  // namespace mt
