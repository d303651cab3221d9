// Everything the commands take, parsed once by launch/cli.cpp and handed down
// as plain config structs; nothing below launch/ reads flags or environment.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "data/batch_schedule.h"
#include "data/prepare_data.h"
#include "launch/step_guard.h"
#include "model/config.h"
#include "model/recompute.h"
#include "optim/adamw.h"
#include "optim/lr_schedule.h"
#include "parallel/pipeline_schedule.h"
#include "parallel/topology.h"

namespace mt {

struct TrainOptions {
  ModelConfig model;  // vocab_size resolved by resolve_vocab_size()
  int vocab_size_flag = 0;  // --vocab-size; 0 = the tokenizer's size
  int make_vocab_size_divisible_by = 128;
  TopologyConfig topology;
  int decoder_first_pipeline_num_layers = 0;  // 0: an even split
  int decoder_last_pipeline_num_layers = 0;
  std::string pipeline_schedule = "1f1b";     // or "gpipe"
  PipelineSchedule schedule = PipelineSchedule::OneFOneB;  // resolved from pipeline_schedule
  // Elements per ZeRO-1 gradient bucket (Megatron's --ddp-bucket-size):
  // smaller buckets start their reduce-scatter earlier in the backward pass.
  int64_t ddp_bucket_size = 1000000;
  bool bf16 = false;  // mixed precision (docs/design.md, "Mixed precision")
  std::string recompute_granularity = "none";  // none, selective or full
  std::string recompute_method = "uniform";    // uniform or block
  int recompute_num_layers = 1;
  RecomputeConfig recompute;  // resolved from the three above
  bool profile = false;  // print where the steps' time goes
  int micro_batch_size = 4;
  int global_batch_size = 16;
  std::vector<int64_t> rampup_batch_size;  // START INCR SAMPLES, or empty
  data::RampupConfig rampup;               // resolved from rampup_batch_size
  std::vector<std::string> data_path;    // PREFIX, or NAME=PREFIX for each source
  std::vector<std::string> data_epochs;  // NAME=EPOCHS for each source
  // Validation (Megatron's flags): the loss over the first eval_iters x
  // global_batch_size samples of this store, in storage order, every
  // eval_interval steps and at the end; none without a path.
  std::string valid_data_path;
  int64_t eval_interval = 1000;
  int64_t eval_iters = 100;
  int64_t train_iters = 0;
  int64_t train_samples = 0;
  LrScheduleConfig lr;
  AdamWConfig adam;
  uint64_t seed = 1234;
  std::string save;
  int64_t save_interval = 0;  // 0: save at the end only
  int keep_last = 0;          // 0: keep every checkpoint
  bool async_save = false;    // write checkpoints while training goes on (launch/checkpoint.h)
  std::string load;
  int64_t log_interval = 10;
  // llm.c's samples while training: every sample_interval steps (0: never),
  // a greedy continuation of sample_prompt by sample_tokens tokens.
  int64_t sample_interval = 0;
  std::string sample_prompt = "The ";
  int sample_tokens = 32;
  std::string metrics_file;  // JSON lines; default SAVE/metrics.jsonl when --save is given
  int threads = 0;           // 0: this rank's share of the cores
  SkipConfig skip;           // which steps are skipped (launch/step_guard.h)
  // Minutes a rank may go without progress before its watchdog stops the
  // job (runtime/watchdog.h); 0: no watchdog.
  double distributed_timeout_minutes = 10.0;
  // Fault injection for tests of the abort path: rank debug_fail_rank throws
  // at the start of iteration debug_fail_at_iteration (0: never).
  int64_t debug_fail_at_iteration = 0;
  int debug_fail_rank = 0;
  // Tests of skipped steps: rank debug_fail_rank's gradients become NaN in
  // debug_nan_iterations iterations from debug_nan_at_iteration, or 1000
  // times larger at debug_spike_at_iteration (0: never).
  int64_t debug_nan_at_iteration = 0;
  int64_t debug_nan_iterations = 1;
  int64_t debug_spike_at_iteration = 0;
  // Tests of the straggler report: rank debug_fail_rank sleeps this long in
  // every step (0: never).
  int64_t debug_slow_ms = 0;
  // Rounding tests: every weight times 1 +- this at the start and after
  // every update (0: never).
  double debug_perturb_weights = 0.0;
  // Tests of the start-up matrix-product check: corrupt the product it checks.
  bool debug_corrupt_gemm_check = false;
};

struct EvalOptions {
  TopologyConfig topology;  // data-parallel replicas split the samples
  int decoder_first_pipeline_num_layers = 0;
  int decoder_last_pipeline_num_layers = 0;
  std::string load;
  std::string data_path;
  int64_t eval_samples = 0;  // 0: every sample of the store
  // The context to evaluate at; 0: the checkpoint's.
  int seq_length = 0;
  double rotary_base = 0.0;
  double rotary_interpolation = 0.0;
  int micro_batch_size = 4;
  bool bf16 = false;
  int threads = 0;
  double distributed_timeout_minutes = 10.0;  // the watchdog's (runtime/watchdog.h); 0: none
};

// How generation picks each token (launch/generation.h).
struct Sampling {
  double temperature = 1.0;  // 0: greedy (argmax, ties to the lower id)
  int top_k = 0;             // 0: every token
  double top_p = 1.0;        // nucleus; 1: every token
  uint64_t seed = 1234;
};

// `moetrain generate` (docs/design.md section 11, "Generation").
struct GenerateOptions {
  TopologyConfig topology;
  int decoder_first_pipeline_num_layers = 0;
  int decoder_last_pipeline_num_layers = 0;
  std::string load;
  std::string prompt;        // --prompt TEXT, or
  std::string prompts_file;  // --prompts FILE: one JSON object a line with "prompt"
  int max_new_tokens = 64;
  Sampling sampling;
  int max_batch = 8;                    // sequences generated together
  std::string batching = "continuous";  // or "static": a batch's prompts start and end together
  bool no_kv_cache = false;             // each token from the full pass over its prefix (the reference)
  bool bf16 = false;
  int threads = 0;
  double distributed_timeout_minutes = 10.0;
};

// The vocabulary: --vocab-size, or the byte tokenizer's 257, rounded up to a
// multiple of --make-vocab-size-divisible-by (docs/design.md section 7).
int resolve_vocab_size(int vocab_size_flag, int divisible_by);

// Samples the run asks for: --train-samples, or what the steps up to
// --train-iters consume under the batch schedule (ramp-up included), going on
// from `iteration` and `consumed` samples (a resumed run's batch size may
// differ from its checkpoint's).
int64_t requested_samples(const TrainOptions& o, int64_t iteration = 0, int64_t consumed = 0);

// The model, batch, ramp-up and pipeline-schedule flags that train and plan
// share: fills what they imply (the vocabulary, rampup, schedule) and checks
// them; each error names the flags.
void resolve_model_and_batch(TrainOptions& o);

// Checks that the layers split over the pipeline stages and the global
// batch over data_parallel replicas' micro-batches (ramp-up included).
void check_layout(const TrainOptions& o, int data_parallel);

// For train: resolve_model_and_batch, check_layout at one replica (the
// world size is known at start-up), the end of LR decay (the whole run by
// default), and every other flag; each error names the flags.
void resolve_and_validate(TrainOptions& o);

}  // namespace mt
