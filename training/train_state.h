// Where a training run stands: what a checkpoint records of it
// (checkpoint/checkpoint_file.h's attributes) and a resume starts from.
#pragma once

#include <cstdint>

namespace mt {

struct TrainState {
  int64_t iteration = 0;         // optimizer steps done (skipped ones included)
  int64_t consumed_samples = 0;  // the stream position of the next step
  int64_t consumed_tokens = 0;
};

}  // namespace mt
