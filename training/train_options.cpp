#include "training/train_options.h"

#include <algorithm>

namespace mt {

int64_t requested_samples(const TrainOptions& o, int64_t iteration, int64_t consumed) {
  if (o.train_samples > 0) return o.train_samples;
  data::BatchSchedule schedule(o.global_batch_size, o.micro_batch_size, 1, o.rampup);
  return schedule.samples_after(std::max<int64_t>(o.train_iters - iteration, 0), consumed);
}

}  // namespace mt
