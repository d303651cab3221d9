// Learning rate as a function of consumed samples (Megatron's convention:
// evaluated at the samples consumed before the step): linear warm-up, then
// cosine or linear decay to min_lr, or constant.
#pragma once

#include <cstdint>
#include <string>

namespace mt {

struct LrScheduleConfig {
  double lr = 3e-4;
  double min_lr = 0.0;
  int64_t warmup_samples = 0;
  int64_t decay_samples = 0;  // end of decay, counted from sample 0 (includes warm-up)
  std::string decay_style = "cosine";  // cosine | linear | constant
};

void validate(const LrScheduleConfig& cfg);
double learning_rate(const LrScheduleConfig& cfg, int64_t consumed_samples);

}  // namespace mt
