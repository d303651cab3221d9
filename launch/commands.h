// The subcommands, each taking its parsed options. Collective over
// MPI_COMM_WORLD; errors are thrown as mt::Error (main() aborts the job).
#pragma once

#include "launch/options.h"

namespace mt {

struct TrainResult {
  int64_t iterations = 0;
  double last_loss = 0.0;  // CE of the last step
};

TrainResult run_train(TrainOptions options);

struct EvalResult {
  double loss = 0.0;  // mean cross-entropy
  int64_t tokens = 0;
  int64_t samples = 0;
};

EvalResult run_eval(const EvalOptions& options);

void run_prepare_data(const data::PrepareDataConfig& config);

}  // namespace mt
