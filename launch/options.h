// Everything the commands take, parsed once by launch/cli.cpp and handed down
// as plain config structs; nothing below launch/ reads flags or environment.
// train's own are training/train_options.h's.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "data/prepare_data.h"
#include "generation/sampling.h"
#include "parallel/topology.h"
#include "tokenizer/train_tokenizer.h"
#include "training/train_options.h"

namespace mt {

// `moetrain train-tokenizer` (launch/train_tokenizer_command.cpp): a
// SentencePiece model trained on what prepare-data would read.
struct TrainTokenizerConfig {
  data::DocumentInputs inputs;
  TrainTokenizerOptions options;
};

struct EvalOptions {
  TopologyConfig topology;  // data-parallel replicas split the samples
  int decoder_first_pipeline_num_layers = 0;
  int decoder_last_pipeline_num_layers = 0;
  std::string load;
  std::string data_path;
  TokenizerOptions tokenizer;  // optional: the checkpoint's tokenizer, named again
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

// `moetrain generate` (docs/design.md section 11, "Generation").
struct GenerateOptions {
  TopologyConfig topology;
  int decoder_first_pipeline_num_layers = 0;
  int decoder_last_pipeline_num_layers = 0;
  std::string load;
  std::string prompt;        // --prompt TEXT, or
  std::string prompts_file;  // --prompts FILE: one JSON object a line with "prompt"
  TokenizerOptions tokenizer;  // optional: the checkpoint's tokenizer, named again
  int max_new_tokens = 64;
  Sampling sampling;
  int max_batch = 8;                    // sequences generated together
  std::string batching = "continuous";  // or "static": a batch's prompts start and end together
  bool no_kv_cache = false;             // each token from the full pass over its prefix (the reference)
  bool bf16 = false;
  int threads = 0;
  double distributed_timeout_minutes = 10.0;
};

// The flags of `moetrain plan`: those of `train`, and the cluster.
struct PlanOptions {
  TrainOptions train;        // model, layout and batch (data and optimizer flags are accepted and unused)
  int num_gpus = 0;          // --num-gpus: the world size TP x PP x DP; 0: TP x PP (one replica)
  std::string gpu;           // --gpu; empty: counts and bytes only, no times
  std::string precision;     // --precision fp32|bf16; empty: bf16 with --gpu, fp32 (the CPU build's) without
  double compute_efficiency = 0.6;  // --compute-efficiency: share of the peak the products reach
  double mfu = 0.0;          // --mfu: assumed model FLOPs utilisation; 0: estimated
  double gpu_hour_cost = 0.0;  // --gpu-hour-cost, per GPU-hour
  double train_tokens = 0.0;   // --train-tokens: tokens of the whole run
  bool serve = false;        // --serve: serving figures for the layout instead of training
  bool search = false;       // --search: every layout of --num-gpus GPUs that fits
  int search_max_tp = 0;     // --search-max-tp; 0: the GPUs of a node
  int search_max_micro_batch_size = 8;
  bool json = false;         // --json
};

// `moetrain inspect PATH` (launch/inspect_command.cpp).
struct InspectOptions {
  std::string path;   // checkpoint.h5, iter_NNNNNNN directory, or a --save directory
  bool json = false;  // one JSON object instead of the tables
  bool verify = false;  // read every dataset back against its checksums; damage is an error
};

// The model's vocabulary: --vocab-size (at least the tokenizer's), or the
// tokenizer's, padded as Megatron pads it: up to a multiple of
// --make-vocab-size-divisible-by x TP (docs/design.md section 7).
int resolve_vocab_size(int vocab_size_flag, const Tokenizer& tokenizer, int divisible_by, int tensor_parallel);

// Collective over MPI_COMM_WORLD. The tokenizer checkpoint `path` records;
// tokenizer flags, if given, must name the same one (an error otherwise).
TokenizerSpec checkpoint_tokenizer(const std::string& path, const TokenizerOptions& flags);

// Collective over MPI_COMM_WORLD. The run's tokenizer: the files the flags
// name, or (--load) the checkpoint's, which the flags may repeat but not
// change; a resumed run keeps the checkpoint's vocabulary size too.
void resolve_tokenizer(TrainOptions& o);

// The model, batch, ramp-up and pipeline-schedule flags that train and plan
// share: fills what they imply (the vocabulary, end-of-document id, rampup,
// schedule) and checks them; each error names the flags.
void resolve_model_and_batch(TrainOptions& o, const Tokenizer& tokenizer);

// Checks that the layers split over the pipeline stages and the global
// batch over data_parallel replicas' micro-batches (ramp-up included).
void check_layout(const TrainOptions& o, int data_parallel);

// For train: resolve_model_and_batch, check_layout at one replica (the
// world size is known at start-up), the end of LR decay (the whole run by
// default), and every other flag; each error names the flags.
void resolve_and_validate(TrainOptions& o, const Tokenizer& tokenizer);

}  // namespace mt
