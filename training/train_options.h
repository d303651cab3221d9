// What `moetrain train` is told: parsed once by launch/ (the flag rows of
// launch/option_tables.h bind to these members), checked there
// (launch/options.h), and read by the training loop as a plain struct.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "data/batch_schedule.h"
#include "model/config.h"
#include "model/recompute.h"
#include "optim/adamw.h"
#include "optim/lr_schedule.h"
#include "parallel/pipeline_schedule.h"
#include "parallel/topology.h"
#include "tokenizer/tokenizer.h"
#include "training/fault_injection.h"
#include "training/step_guard.h"

namespace mt {

struct TrainOptions {
  ModelConfig model;  // vocab_size and moe_layers resolved by resolve_model_and_batch()
  std::string moe_layer_freq = "1";   // --moe-layer-freq, resolved into model.moe_layers
  std::string moe_router_dtype = "fp32";
  int vocab_size_flag = 0;  // --vocab-size; 0 = the tokenizer's size
  TokenizerOptions tokenizer;  // the flags: a fresh run's tokenizer
  // Resolved by launch/ (resolve_tokenizer): the flags' files, or the
  // checkpoint's tokenizer when resuming; every checkpoint records it.
  std::shared_ptr<const TokenizerSpec> tokenizer_spec;
  int resumed_vocab_size = 0;  // the checkpoint's vocabulary when resuming: the model keeps it
  int make_vocab_size_divisible_by = 128;
  TopologyConfig topology;
  int decoder_first_pipeline_num_layers = 0;  // 0: an even split
  int decoder_last_pipeline_num_layers = 0;
  std::string pipeline_schedule = "1f1b";     // or "gpipe"
  PipelineSchedule schedule = PipelineSchedule::OneFOneB;  // resolved from pipeline_schedule
  // Elements per ZeRO-1 gradient bucket (Megatron's --ddp-bucket-size):
  // smaller buckets start their reduce-scatter earlier in the backward pass.
  int64_t ddp_bucket_size = 1000000;
  bool sequence_parallel = false;  // --sequence-parallel (docs/design.md section 4.1)
  // --grad-reduce-in-bf16: under --bf16, gradients accumulate and are
  // reduced in bf16 (docs/design.md section 8); --accumulate-allreduce-
  // grads-in-fp32 names the default, float32.
  bool grad_reduce_in_bf16 = false;
  bool accumulate_allreduce_grads_in_fp32 = false;
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
  bool async_save = false;    // write checkpoints while training goes on (checkpoint/checkpointer.h)
  std::string load;
  int64_t log_interval = 10;
  // llm.c's samples while training: every sample_interval steps (0: never),
  // a greedy continuation of sample_prompt by sample_tokens tokens.
  int64_t sample_interval = 0;
  std::string sample_prompt = "The ";
  int sample_tokens = 32;
  std::string metrics_file;  // JSON lines; default SAVE/metrics.jsonl when --save is given
  int threads = 0;           // 0: this rank's share of the cores
  SkipConfig skip;           // which steps are skipped (training/step_guard.h)
  // Minutes a rank may go without progress before its watchdog stops the
  // job (runtime/watchdog.h); 0: no watchdog.
  double distributed_timeout_minutes = 10.0;
  FaultConfig debug;  // the --debug-* flags of the tests (training/fault_injection.h)
};

// Samples the run asks for: --train-samples, or what the steps up to
// --train-iters consume under the batch schedule (ramp-up included), going on
// from `iteration` and `consumed` samples (a resumed run's batch size may
// differ from its checkpoint's).
int64_t requested_samples(const TrainOptions& o, int64_t iteration = 0, int64_t consumed = 0);

}  // namespace mt
