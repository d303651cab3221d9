#include "launch/options.h"

#include <algorithm>

#include "checkpoint/checkpoint_dir.h"
#include "checkpoint/checkpoint_file.h"
#include "parallel/pipeline_schedule.h"
#include "runtime/check.h"
#include "runtime/communicator.h"

namespace mt {

int resolve_vocab_size(int vocab_size_flag, const Tokenizer& tokenizer, int divisible_by, int tensor_parallel) {
  MT_CHECK(divisible_by >= 1, "--make-vocab-size-divisible-by must be >= 1, got {}", divisible_by);
  MT_CHECK(vocab_size_flag >= 0, "--vocab-size must be positive, got {}", vocab_size_flag);
  MT_CHECK(vocab_size_flag == 0 || vocab_size_flag >= tokenizer.vocab_size(),
           "--vocab-size {} is below the tokenizer's {} ids", vocab_size_flag, tokenizer.vocab_size());
  const int base = vocab_size_flag > 0 ? vocab_size_flag : tokenizer.vocab_size();
  const int multiple = divisible_by * std::max(tensor_parallel, 1);
  return (base + multiple - 1) / multiple * multiple;
}

TokenizerSpec checkpoint_tokenizer(const std::string& path, const TokenizerOptions& flags) {
  TokenizerSpec spec = read_checkpoint_tokenizer(path, MPI_COMM_WORLD);
  const TokenizerOptions defaults;
  const bool flags_name_one = flags.type != defaults.type || !flags.vocab_file.empty() || !flags.merge_file.empty() ||
                              !flags.tokenizer_model.empty();
  if (flags_name_one)
    MT_CHECK(read_tokenizer_spec(flags).same_tokenizer(spec),
             "--tokenizer-type {} and its files are not the tokenizer of checkpoint {} ({}), which the model was "
             "trained with and keeps: leave the tokenizer flags out",
             flags.type, path, spec.options.type);
  return spec;
}

void resolve_tokenizer(TrainOptions& o) {
  if (o.tokenizer.vocab_size == 0) o.tokenizer.vocab_size = o.vocab_size_flag;  // NullTokenizer's size
  if (o.load.empty()) {
    o.tokenizer_spec = std::make_shared<const TokenizerSpec>(read_tokenizer_spec(o.tokenizer));
    return;
  }
  MpiCommunicator mpi_world(MPI_COMM_WORLD);
  Communicator& world = mpi_world;
  std::string path;
  if (world.rank() == 0) path = resolve_checkpoint(o.load);  // the checkpointer prints what it skips
  world.broadcast(path, 0);
  o.tokenizer_spec = std::make_shared<const TokenizerSpec>(checkpoint_tokenizer(path, o.tokenizer));
  o.resumed_vocab_size = read_checkpoint_info(path, MPI_COMM_WORLD).model.vocab_size;
}

void resolve_model_and_batch(TrainOptions& o, const Tokenizer& tokenizer) {
  // A resumed model keeps its vocabulary, so that it resumes at any TP.
  o.model.vocab_size = o.resumed_vocab_size > 0 ? o.resumed_vocab_size
                                                : resolve_vocab_size(o.vocab_size_flag, tokenizer,
                                                                     o.make_vocab_size_divisible_by,
                                                                     o.topology.tensor_parallel);
  MT_CHECK(o.model.is_moe() || o.moe_layer_freq == "1",
           "--moe-layer-freq {} places MoE layers, but a dense model (--num-experts 1) has none", o.moe_layer_freq);
  o.model.moe_layers = o.model.is_moe() ? parse_moe_layer_freq(o.moe_layer_freq, o.model.num_layers)
                                        : std::vector<int>{};
  MT_CHECK(o.moe_router_dtype == "fp32",
           "--moe-router-dtype {}: routing runs in fp32 (float64 in float64 models); only fp32 is supported",
           o.moe_router_dtype);
  o.model.eod_token = tokenizer.eod();
  o.model.validate();
  if (!o.rampup_batch_size.empty()) {
    MT_CHECK(o.rampup_batch_size.size() == 3, "--rampup-batch-size takes START INCR SAMPLES");
    o.rampup = {o.rampup_batch_size[0], o.rampup_batch_size[1], o.rampup_batch_size[2]};
  }
  MT_CHECK(o.micro_batch_size >= 1, "--micro-batch-size must be >= 1, got {}", o.micro_batch_size);
  MT_CHECK(o.global_batch_size >= 1, "--global-batch-size must be >= 1, got {}", o.global_batch_size);
  o.schedule = parse_pipeline_schedule(o.pipeline_schedule);
  o.recompute = parse_recompute(o.recompute_granularity, o.recompute_method, o.recompute_num_layers);
}

void check_layout(const TrainOptions& o, int data_parallel) {
  stage_layers(o.model.num_layers, o.topology.pipeline_parallel, o.decoder_first_pipeline_num_layers,
               o.decoder_last_pipeline_num_layers);
  data::BatchSchedule(o.global_batch_size, o.micro_batch_size, data_parallel, o.rampup);  // throws if sizes don't divide
  const int tp = o.topology.tensor_parallel, cp = o.topology.context_parallel;
  MT_CHECK(cp == 1 || o.model.seq_length % (2 * cp) == 0,
           "--context-parallel-size {} cuts each sequence into {} chunks: --seq-length {} does not divide by {}", cp,
           2 * cp, o.model.seq_length, 2 * cp);
  MT_CHECK(cp == 1 || !o.model.is_moe(),
           "--context-parallel-size {} with a mixture of experts (--num-experts {}): routing's balancing statistics "
           "over the CP group are not built yet; use CP with a dense model (--num-experts 1)",
           cp, o.model.num_experts);
  MT_CHECK(!o.sequence_parallel || (o.model.seq_length / cp) % tp == 0,
           "--sequence-parallel splits each sequence over the TP ranks: --seq-length {} does not divide by "
           "--tensor-model-parallel-size {}",
           o.model.seq_length, tp);
}

void resolve_and_validate(TrainOptions& o, const Tokenizer& tokenizer) {
  resolve_model_and_batch(o, tokenizer);
  validate(o.adam);
  MT_CHECK(!o.data_path.empty(), "--data-path is required: PREFIX, or NAME=PREFIX for each source");
  MT_CHECK(o.train_iters > 0 || o.train_samples > 0,
           "give the length of the run: --train-iters or --train-samples");
  MT_CHECK(o.train_iters == 0 || o.train_samples == 0,
           "give only one of --train-iters ({}) and --train-samples ({})", o.train_iters,
           o.train_samples);
  MT_CHECK(o.train_iters >= 0 && o.train_samples >= 0, "--train-iters/--train-samples must be >= 0");
  MT_CHECK(o.log_interval >= 1, "--log-interval must be >= 1, got {}", o.log_interval);
  MT_CHECK(o.eval_interval >= 1, "--eval-interval must be >= 1, got {}", o.eval_interval);
  MT_CHECK(o.eval_iters >= 1, "--eval-iters must be >= 1, got {}", o.eval_iters);
  MT_CHECK(o.sample_interval >= 0, "--sample-interval must be >= 0, got {}", o.sample_interval);
  MT_CHECK(o.sample_tokens >= 1, "--sample-tokens must be >= 1, got {}", o.sample_tokens);
  MT_CHECK(o.sample_interval == 0 || !o.sample_prompt.empty(), "--sample-prompt is empty: there is nothing to continue");
  MT_CHECK(o.sample_interval == 0 || int64_t(tokenizer.encode(o.sample_prompt).size()) < o.model.seq_length,
           "--sample-prompt is {} tokens, the context (--seq-length) is {}: nothing fits after it",
           tokenizer.encode(o.sample_prompt).size(), o.model.seq_length);
  MT_CHECK(o.save_interval >= 0, "--save-interval must be >= 0, got {}", o.save_interval);
  MT_CHECK(o.save_interval == 0 || !o.save.empty(), "--save-interval {} needs --save DIR",
           o.save_interval);
  MT_CHECK(o.keep_last >= 0, "--keep-last must be >= 0, got {}", o.keep_last);
  MT_CHECK(o.keep_last == 0 || !o.save.empty(), "--keep-last {} needs --save DIR", o.keep_last);
  MT_CHECK(o.threads >= 0, "--threads must be >= 0, got {}", o.threads);
  MT_CHECK(o.sample_interval == 0 || o.topology.context_parallel == 1,
           "--sample-interval with --context-parallel-size {}: samples while training need the whole sequence on "
           "one rank; not built yet",
           o.topology.context_parallel);
  MT_CHECK(!o.grad_reduce_in_bf16 || o.bf16,
           "--grad-reduce-in-bf16 keeps the gradients in bf16, which needs --bf16 (the gradients of a float32 run "
           "are float32)");
  MT_CHECK(!(o.grad_reduce_in_bf16 && o.accumulate_allreduce_grads_in_fp32),
           "--grad-reduce-in-bf16 and --accumulate-allreduce-grads-in-fp32 ask for opposite gradient types");
  MT_CHECK(o.ddp_bucket_size > 0, "--ddp-bucket-size must be positive, got {}", o.ddp_bucket_size);
  check_layout(o, 1);
  if (o.lr.decay_samples == 0) o.lr.decay_samples = requested_samples(o);
  validate(o.lr);
}

}  // namespace mt
