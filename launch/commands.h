// The subcommands, each taking its parsed options. Collective over
// MPI_COMM_WORLD; errors are thrown as mt::Error (main() aborts the job).
#pragma once

#include <string>
#include <vector>

#include "launch/options.h"
#include "planner/plan.h"
#include "training/trainer.h"

namespace mt {

// `moetrain train` (launch/train_command.cpp): checks the flags, then
// training/trainer.h's loop.
TrainResult run_train(TrainOptions options);

struct EvalResult {
  double loss = 0.0;  // mean cross-entropy
  int64_t tokens = 0;
  int64_t samples = 0;
};
EvalResult run_eval(const EvalOptions& options);

// `moetrain generate`: every prompt's completion (launch/generate_command.cpp).
struct Generation {
  std::string prompt, completion;
  int64_t tokens = 0;        // generated
  double tokens_per_s = 0;
  std::vector<double> margins;  // each greedy token's logit over the runner-up's
};
std::vector<Generation> run_generate(const GenerateOptions& options);

void run_prepare_data(const data::PrepareDataConfig& config);
void run_train_tokenizer(const TrainTokenizerConfig& config);

// `moetrain inspect PATH` (launch/inspect_command.cpp): a checkpoint's
// attributes and tensors (shape, dtype, L2 norm); rank 0 reads, the others
// return at once.
void run_inspect(const InspectOptions& options);

// `moetrain plan` (launch/plan_command.cpp): the cost model's inputs from
// the flags (what they imply, each error naming its flag; with --search
// the layout flags are not checked, the search picks its own), and its
// figures printed; one rank.
PlanInputs resolve_plan_inputs(const PlanOptions& options);
void run_plan(const PlanOptions& options);

}  // namespace mt
