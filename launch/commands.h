// The subcommands, each taking its parsed options. Collective over
// MPI_COMM_WORLD; errors are thrown as mt::Error (main() aborts the job).
#pragma once

#include <string>
#include <vector>

#include "launch/options.h"

namespace mt {

struct TrainResult {
  int64_t iterations = 0;
  double last_loss = 0.0;  // CE of the last step
  bool stopped_by_signal = false;  // SIGTERM / SIGUSR1: saved and stopped early
};

TrainResult run_train(TrainOptions options);

struct EvalResult {
  double loss = 0.0;  // mean cross-entropy
  int64_t tokens = 0;
  int64_t samples = 0;
};

EvalResult run_eval(const EvalOptions& options);

// `moetrain generate`: every prompt's completion (launch/generate.cpp).
struct Generation {
  std::string prompt, completion;
  int64_t tokens = 0;        // generated
  double tokens_per_s = 0;
  std::vector<double> margins;  // each greedy token's logit over the runner-up's
};
std::vector<Generation> run_generate(const GenerateOptions& options);

void run_prepare_data(const data::PrepareDataConfig& config);

// `moetrain inspect PATH` (launch/inspect_command.cpp): a checkpoint's
// attributes and tensors (shape, dtype, L2 norm); rank 0 reads, the others
// return at once.
struct InspectOptions {
  std::string path;   // checkpoint.h5, iter_NNNNNNN directory, or a --save directory
  bool json = false;  // one JSON object instead of the tables
  bool verify = false;  // read every dataset back against its checksums; damage is an error
};
void run_inspect(const InspectOptions& options);

// `moetrain plan` (launch/plan.h): prints the cost model's figures; one rank.
struct PlanOptions;
void run_plan(const PlanOptions& options);

}  // namespace mt
