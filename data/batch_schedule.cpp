#include "data/batch_schedule.h"

#include <algorithm>

#include "runtime/check.h"

namespace mt::data {

BatchSchedule::BatchSchedule(int64_t global, int64_t micro, int64_t dp, RampupConfig r)
    : global_(global), micro_batch_(micro), data_parallel_(dp), rampup_(r) {
  const int64_t unit = micro * dp;
  MT_CHECK(micro >= 1 && dp >= 1, "micro-batch size {} and data-parallel size {} must be >= 1", micro, dp);
  MT_CHECK(global % unit == 0,
           "--global-batch-size {} is not divisible by --micro-batch-size {} x data-parallel size {}",
           global, micro, dp);
  if (r.start == 0) return;
  MT_CHECK(r.start > 0 && r.increment > 0 && r.samples > 0,
           "--rampup-batch-size {} {} {}: START, INCR and SAMPLES must be positive", r.start,
           r.increment, r.samples);
  MT_CHECK(r.start <= global, "--rampup-batch-size START {} exceeds --global-batch-size {}", r.start,
           global);
  MT_CHECK((global - r.start) % r.increment == 0,
           "--rampup-batch-size: --global-batch-size {} minus START {} is not a multiple of INCR {}",
           global, r.start, r.increment);
  for (int64_t size = r.start; size <= global; size += r.increment)
    MT_CHECK(size % unit == 0,
             "--rampup-batch-size {} {} {}: batch size {} on the way is not divisible by "
             "--micro-batch-size {} x data-parallel size {}",
             r.start, r.increment, r.samples, size, micro, dp);
  const int64_t increments = (global - r.start) / r.increment;
  samples_per_increment_ = increments > 0 ? double(r.samples) / double(increments) : 0.0;
}

int64_t BatchSchedule::global_batch(int64_t consumed) const {
  if (rampup_.start == 0 || consumed > rampup_.samples || samples_per_increment_ == 0.0) return global_;
  const int64_t steps = int64_t(double(consumed) / samples_per_increment_);
  return std::min(global_, rampup_.start + steps * rampup_.increment);
}

int64_t BatchSchedule::samples_after(int64_t steps, int64_t consumed) const {
  for (int64_t i = 0; i < steps; ++i) {
    if (rampup_.start == 0 || consumed > rampup_.samples) return consumed + (steps - i) * global_;
    consumed += global_batch(consumed);
  }
  return consumed;
}

}  // namespace mt::data
