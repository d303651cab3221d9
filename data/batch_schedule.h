// The global batch of each step: constant, or ramped up as Megatron-LM's
// --rampup-batch-size START INCR SAMPLES: START grows by INCR at even steps of
// consumed samples and reaches --global-batch-size after SAMPLES samples.
// Every size must divide by micro-batch x data-parallel size.
#pragma once

#include <cstdint>

namespace mt::data {

struct RampupConfig {
  int64_t start = 0;      // 0: no ramp-up
  int64_t increment = 0;
  int64_t samples = 0;
};

// Stream position of sample i of micro-batch j on data-parallel rank r, in
// the step that starts at `consumed` with a global batch of `global`: rank r
// reads the r-th contiguous slice of the global batch (docs/design.md section 5.4).
inline int64_t sample_position(int64_t consumed, int64_t global, int64_t dp_rank, int64_t dp_size,
                               int64_t micro_index, int64_t micro_batch, int64_t i) {
  return consumed + dp_rank * (global / dp_size) + micro_index * micro_batch + i;
}

class BatchSchedule {
 public:
  // Throws naming the flags if a size cannot be cut into micro-batches.
  BatchSchedule(int64_t global_batch, int64_t micro_batch, int64_t data_parallel, RampupConfig rampup);

  int64_t global_batch(int64_t consumed_samples) const;
  int64_t micro_batches(int64_t consumed_samples) const {  // per data-parallel rank
    return global_batch(consumed_samples) / (micro_batch_ * data_parallel_);
  }
  // Samples consumed after `steps` more optimizer steps from `consumed`.
  int64_t samples_after(int64_t steps, int64_t consumed = 0) const;
  int64_t micro_batch() const { return micro_batch_; }
  int64_t final_global_batch() const { return global_; }

 private:
  int64_t global_, micro_batch_, data_parallel_;
  RampupConfig rampup_;
  double samples_per_increment_ = 0.0;
};

}  // namespace mt::data
