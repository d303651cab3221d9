// `moetrain train`'s loop (docs/design.md section 3.4), as llm.c's training
// section reads: set-up, then a step at a time read_global_batch,
// train_step, the interval's log, validation and samples when due, and
// save_and_decide_to_stop.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>

#include "training/train_options.h"

namespace mt {

struct TrainResult {
  int64_t iterations = 0;
  double last_loss = 0.0;          // CE of the last step
  bool stopped_by_signal = false;  // SIGTERM / SIGUSR1: saved and stopped early
};

// Collective over MPI_COMM_WORLD: the run `o` describes (resolved and
// checked: launch/options.h), in bf16 with o.bf16, else float32. config:
// the run configuration each checkpoint records (the model and the flags
// that decide what is trained).
TrainResult train(const TrainOptions& o, const nlohmann::json& config);

}  // namespace mt
