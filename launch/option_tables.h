// The flags of each command, one table a command. A row names the flag,
// says what it does and binds the member it fills. From these rows
// launch/cli.cpp builds the command line and the --config file keys (the
// long flag names without dashes), and launch/train_command.cpp the run
// configuration each checkpoint records. Flag names follow Megatron-LM.
#pragma once

#include <algorithm>
#include <string>

#include "launch/options.h"

namespace mt {

struct Flag {
  const char* names;      // "--tensor-model-parallel-size,--tp"
  const char* help;
  bool recorded = false;  // in the run configuration: it decides what is trained
  int values = 1;         // per use: 1, a fixed count, or -1 (one or more)
};
constexpr bool kRecorded = true;

// "--data-epochs" -> "data_epochs": the flag's key in the run configuration.
inline std::string flag_key(const Flag& f) {
  std::string key(f.names);
  key = key.substr(2, key.find(',') == std::string::npos ? std::string::npos : key.find(',') - 2);
  std::replace(key.begin(), key.end(), '-', '_');
  return key;
}

// The tokenizer (docs/data.md), Megatron's flags. prepare-data and a fresh
// train read the files they name; a resumed train, eval and generate take
// the tokenizer the checkpoint holds (the flags, if given, must name it).
// (--vocab-size, NullTokenizer's size,
// is train's model flag and prepare-data's own.)
template <typename Options, typename Visit>
void visit_tokenizer_flags(Options& t, Visit&& visit) {
  visit(Flag{"--tokenizer-type",
             "ByteTokenizer (the default: bytes and an end of document), NullTokenizer, GPT2BPETokenizer, "
             "TikTokenizer, SentencePieceTokenizer, GPTSentencePieceTokenizer, Llama2Tokenizer or "
             "HuggingFaceTokenizer"},
        t.type);
  visit(Flag{"--vocab-file", "GPT2BPETokenizer: its vocabulary, encoder.json"}, t.vocab_file);
  visit(Flag{"--merge-file", "GPT2BPETokenizer: its merges, vocab.bpe"}, t.merge_file);
  visit(Flag{"--tokenizer-model",
             "TikTokenizer: a .tiktoken ranks file or Megatron's JSON vocabulary; the SentencePiece types: a "
             ".model; HuggingFaceTokenizer: a tokenizer.json"},
        t.tokenizer_model);
  visit(Flag{"--tiktoken-pattern",
             "TikTokenizer's split: v1 or v2 (Megatron's JSON vocabulary), cl100k_base, o200k_base or gpt2 "
             "(OpenAI's .tiktoken files, with their special tokens)"},
        t.tiktoken_pattern);
  visit(Flag{"--tiktoken-num-special-tokens",
             "TikTokenizer with Megatron's JSON vocabulary: ids below this are special tokens"},
        t.tiktoken_num_special_tokens);
}

// The inputs that prepare-data and train-tokenizer read (docs/data.md).
template <typename Visit>
void visit_document_input_flags(data::DocumentInputs& in, Visit&& visit) {
  visit(Flag{"--input",
             "Text files (each one document), JSON lines (*.jsonl, *.json: a document a line and key) or directories "
             "(walked recursively, in sorted order)",
             false, -1},
        in.inputs);
  visit(Flag{"--extensions", "In directories, only files with these extensions, comma separated (e.g. .h,.hpp)", false,
             -1},
        in.extensions);
  visit(Flag{"--json-keys", "JSON lines: the keys whose strings are documents, a store each (default: text)", false,
             -1},
        in.json_keys);
}

template <typename Visit>
void visit_prepare_data_flags(data::PrepareDataConfig& p, Visit&& visit) {
  visit_document_input_flags(p.inputs, visit);
  visit(Flag{"--output-prefix",
             "Writes PREFIX.bin/.idx (text), or PREFIX_KEY_document.bin/.idx a --json-keys key (JSON lines), as "
             "Megatron's preprocess_data.py"},
        p.output_prefix);
  visit_tokenizer_flags(p.tokenizer, visit);
  visit(Flag{"--vocab-size", "NullTokenizer: the number of ids"}, p.tokenizer.vocab_size);
  visit(Flag{"--append-eod,!--no-append-eod",
             "The tokenizer's end-of-document id after each document (on by default: Megatron users pass it)"},
        p.append_eod);
  visit(Flag{"--workers", "Threads tokenizing; the stores are the same bytes for any count"}, p.workers);
}

template <typename Visit>
void visit_train_tokenizer_flags(TrainTokenizerConfig& c, Visit&& visit) {
  visit_document_input_flags(c.inputs, visit);
  TrainTokenizerOptions& t = c.options;
  visit(Flag{"--output-prefix", "Writes PREFIX.model (for --tokenizer-model) and PREFIX.vocab"}, t.output_prefix);
  visit(Flag{"--vocab-size", "Pieces of the model, the 256 byte pieces and <unk>, <s>, </s> included (required)"},
        t.vocab_size);
  visit(Flag{"--model-type", "bpe or unigram (SentencePiece's)"}, t.model_type);
  visit(Flag{"--input-sentence-size", "Lines trained on, a uniform sample when the corpus has more (0: every line)"},
        t.input_sentence_size);
  visit(Flag{"--threads", "SentencePiece's training threads"}, t.threads);
  visit(Flag{"--verbose", "SentencePiece's own log on standard error"}, t.verbose);
}

// The model's shape. The checkpoint records the resolved ModelConfig
// (model_config_to_json), so these rows are not `recorded` themselves.
template <typename Options, typename Visit>
void visit_model_flags(Options& o, Visit&& visit) {
  auto& m = o.model;
  visit(Flag{"--num-layers", "Transformer layers L"}, m.num_layers);
  visit(Flag{"--hidden-size", "Model width d"}, m.hidden_size);
  visit(Flag{"--num-attention-heads", "Query heads H (must divide the width)"}, m.num_heads);
  visit(Flag{"--num-query-groups", "Key/value heads G (1 = multi-query attention; must divide H)"},
        m.num_query_groups);
  visit(Flag{"--kv-channels", "Head size hd (0: hidden size / heads); q, k, v are H*hd and G*hd wide"},
        m.kv_channels);
  visit(Flag{"--qk-layernorm", "RMSNorm over each head's query and key before RoPE (gains q_norm, k_norm)"},
        m.qk_layernorm);
  visit(Flag{"--ffn-hidden-size", "Hidden size F of the dense MLPs (and of the experts without --moe-ffn-hidden-size)"},
        m.ffn_hidden_size);
  visit(Flag{"--swiglu", "Gated MLPs, w2(silu(w1 x) * (w3 x)), for the dense MLPs, the experts and the shared expert"},
        m.swiglu);
  visit(Flag{"--num-experts", "Experts E per layer (1 = dense MLP)"}, m.num_experts);
  visit(Flag{"--moe-router-topk", "Experts K each token is routed to"}, m.router_topk);
  visit(Flag{"--moe-ffn-hidden-size", "Hidden size of a routed expert (0: --ffn-hidden-size)"},
        m.moe_ffn_hidden_size);
  visit(Flag{"--moe-layer-freq",
             "Which layers are MoE layers: N (every N-th, from the first) or a list such as [0]*3+[1]*29 or "
             "[1,0,1,0]; the others are dense MLPs of --ffn-hidden-size"},
        o.moe_layer_freq);
  visit(Flag{"--moe-shared-expert-intermediate-size",
             "Hidden size of a shared expert every token of an MoE layer passes through, beside its routed "
             "experts (0: none)"},
        m.shared_expert_size);
  visit(Flag{"--moe-shared-expert-gate", "Scale the shared expert's output by sigmoid(x gate) (Qwen2-MoE)"},
        m.shared_expert_gate);
  visit(Flag{"--moe-router-score-function", "softmax or sigmoid (DeepSeek-V3): the router's scores"},
        m.router_score_function);
  visit(Flag{"--moe-router-pre-softmax",
             "With softmax scores, weigh the chosen experts by the softmax over all experts instead of "
             "renormalising over the top K (no effect on sigmoid scores, as in Megatron)"},
        m.router_pre_softmax);
  visit(Flag{"--moe-router-topk-scaling-factor", "Multiply the routing weights by this (0: no scaling)"},
        m.router_topk_scaling_factor);
  visit(Flag{"--moe-router-num-groups", "Group-limited routing: the experts form this many groups (0: none)"},
        m.router_num_groups);
  visit(Flag{"--moe-router-group-topk",
             "Group-limited routing: a token picks its experts from this many groups, the ones whose best "
             "top-k / group-top-k scores sum highest"},
        m.router_group_topk);
  visit(Flag{"--moe-router-load-balancing-type",
             "aux_loss (per micro-batch), seq_aux_loss (per sequence), global_aux_loss (the shares of the last "
             "global batch) or none"},
        m.load_balancing_type);
  visit(Flag{"--moe-aux-loss-coeff", "Load-balancing loss coefficient alpha"}, m.aux_loss_coeff);
  visit(Flag{"--moe-router-enable-expert-bias",
             "Aux-loss-free balancing: a per-expert bias on the sigmoid scores, for choosing experts only, moved "
             "after each step toward the mean load"},
        m.expert_bias);
  visit(Flag{"--moe-router-bias-update-rate", "The expert bias's step after each optimizer step"},
        m.expert_bias_update_rate);
  visit(Flag{"--moe-router-dtype", "Routing precision: fp32 (routing is float32 in every precision but float64)"},
        o.moe_router_dtype);
  visit(Flag{"--moe-z-loss-coeff", "Router z-loss coefficient: c * mean over tokens of logsumexp(router logits)^2"},
        m.z_loss_coeff);
  visit(Flag{"--moe-expert-capacity-factor",
             "Expert capacity factor c: an expert takes at most ceil(c*K*T/E) of a micro-batch's T tokens "
             "(0 = no limit)"},
        m.capacity_factor);
  visit(Flag{"--seq-length", "Sequence length S (a resumed run may change it: context extension)"}, m.seq_length);
  visit(Flag{"--rotary-base", "RoPE's base theta"}, m.rope_theta);
  visit(Flag{"--rotary-seq-len-interpolation-factor",
             "Linear position interpolation: RoPE positions are divided by this (e.g. 4 to extend a model "
             "trained at S to 4 S)"},
        m.rope_interpolation);
  visit(Flag{"--reset-position-ids", "RoPE positions restart at 0 after every end-of-document token"},
        m.reset_position_ids);
  visit(Flag{"--reset-attention-mask", "A token attends only to earlier tokens of its own document"},
        m.reset_attention_mask);
  visit(Flag{"--vocab-size", "Vocabulary size before rounding (0: the byte tokenizer's 257)"}, o.vocab_size_flag);
  visit(Flag{"--make-vocab-size-divisible-by", "Round the vocabulary up to a multiple of this"},
        o.make_vocab_size_divisible_by);
}

// The layout: TP x PP, the rest of the ranks data-parallel replicas, split
// EP x expert-DP for the experts.
template <typename Options, typename Visit>
void visit_layout_flags(Options& o, Visit&& visit) {
  visit(Flag{"--tensor-model-parallel-size,--tp", "Tensor-parallel ranks"}, o.topology.tensor_parallel);
  visit(Flag{"--pipeline-model-parallel-size,--pp", "Pipeline-parallel stages"}, o.topology.pipeline_parallel);
  visit(Flag{"--expert-model-parallel-size,--ep",
             "Expert-parallel ranks: each holds E/EP experts of every MoE layer and tokens reach them by "
             "all-to-all; divides the data-parallel size and the expert count"},
        o.topology.expert_parallel);
  visit(Flag{"--decoder-first-pipeline-num-layers",
             "Layers of the first pipeline stage (it also holds the embedding); the rest split evenly (0: an "
             "even split)"},
        o.decoder_first_pipeline_num_layers);
  visit(Flag{"--decoder-last-pipeline-num-layers", "Layers of the last pipeline stage (0: an even split)"},
        o.decoder_last_pipeline_num_layers);
}

// The watchdog's timeout (runtime/watchdog.h), for train and eval.
template <typename Options, typename Visit>
void visit_timeout_flag(Options& o, Visit&& visit) {
  visit(Flag{"--distributed-timeout-minutes",
             "Stop the job when a rank has made no progress for this long (fractions allowed; 0: never), naming the "
             "step and what the rank waits in"},
        o.distributed_timeout_minutes);
}

template <typename Options, typename Visit>
void visit_train_flags(Options& o, Visit&& visit) {
  visit_model_flags(o, visit);
  visit_tokenizer_flags(o.tokenizer, visit);
  visit_layout_flags(o, visit);
  visit(Flag{"--context-parallel-size,--cp",
             "Context-parallel ranks: each sequence is cut into 2 CP chunks, rank i holding chunks i and 2CP-1-i, "
             "attention by ring (--seq-length must divide by 2 CP); world = TP x CP x PP x DP. Dense models only "
             "for now"},
        o.topology.context_parallel);
  visit(Flag{"--sequence-parallel",
             "With TP > 1, split the residual stream, the norms and the saved layer inputs over the TP ranks by "
             "sequence (each TP all-reduce becomes a reduce-scatter and an all-gather); --seq-length must divide "
             "by TP. Off with a warning at TP 1"},
        o.sequence_parallel);
  visit(Flag{"--pipeline-schedule",
             "1f1b (at most PP - stage micro-batches alive a stage) or gpipe (all forwards, then all backwards)"},
        o.pipeline_schedule);
  visit(Flag{"--ddp-bucket-size",
             "Parameters per data-parallel gradient bucket: each bucket's reduce-scatter starts as soon as the "
             "backward pass has finished its gradients"},
        o.ddp_bucket_size);
  visit(Flag{"--bf16",
             "Mixed precision: bf16 weights, activations and products (accumulated in fp32); fp32 statistics, "
             "softmaxes, routing and losses, gradients, master weights and Adam moments. Checkpoints hold fp32 "
             "weights either way",
             kRecorded},
        o.bf16);
  visit(Flag{"--grad-reduce-in-bf16",
             "With --bf16: accumulate the gradients over micro-batches and reduce them over the replicas in bf16 "
             "(half the gradient memory); the ZeRO-1 master weights and Adam moments stay fp32"},
        o.grad_reduce_in_bf16);
  visit(Flag{"--accumulate-allreduce-grads-in-fp32",
             "Accumulate and reduce the gradients in fp32: the default (Megatron's name for it)"},
        o.accumulate_allreduce_grads_in_fp32);
  visit(Flag{"--recompute-granularity",
             "Activation recompute, which trades compute for memory and never changes a result: none; selective "
             "(the attention core is recomputed from q, k, v); full (recomputed layers keep only their input)"},
        o.recompute_granularity);
  visit(Flag{"--recompute-method",
             "Full recompute: uniform (each group of --recompute-num-layers consecutive layers keeps the input of "
             "its first and is recomputed as a whole) or block (only each stage's first --recompute-num-layers "
             "layers are recomputed, each from its own input)"},
        o.recompute_method);
  visit(Flag{"--recompute-num-layers", "Layers a uniform group holds, or layers a stage recomputes under block"},
        o.recompute_num_layers);
  visit(Flag{"--micro-batch-size", "Samples per micro-batch", kRecorded}, o.micro_batch_size);
  visit(Flag{"--global-batch-size", "Samples per optimizer step (gradients accumulate over micro-batches)",
             kRecorded},
        o.global_batch_size);
  visit(Flag{"--rampup-batch-size",
             "Batch ramp-up START INCR SAMPLES: the global batch starts at START and grows by INCR at even steps "
             "until --global-batch-size after SAMPLES samples",
             kRecorded, 3},
        o.rampup_batch_size);
  visit(Flag{"--data-path",
             "Token stores (PREFIX.bin + PREFIX.idx): PREFIX, or NAME=PREFIX for each source of a blend, e.g. "
             "text=data/text code=data/code",
             kRecorded, -1},
        o.data_path);
  visit(Flag{"--data-epochs",
             "Epochs of each named source, NAME=EPOCHS (fractions allowed), e.g. text=2 code=4; sources are "
             "interleaved in proportion to epochs x size. A single source without one repeats as often as the "
             "run needs",
             kRecorded, -1},
        o.data_epochs);
  visit(Flag{"--valid-data-path",
             "Token store (PREFIX) to validate on: the loss over its first --eval-iters x --global-batch-size "
             "samples, in storage order, every --eval-interval steps and at the end",
             kRecorded},
        o.valid_data_path);
  visit(Flag{"--eval-interval", "Steps between validations (with --valid-data-path)"}, o.eval_interval);
  visit(Flag{"--eval-iters", "Global batches each validation evaluates (with --valid-data-path)", kRecorded},
        o.eval_iters);
  visit(Flag{"--train-iters", "Optimizer steps to train for", kRecorded}, o.train_iters);
  visit(Flag{"--train-samples", "Samples to train for (instead of --train-iters)", kRecorded}, o.train_samples);
  visit(Flag{"--lr", "Peak learning rate", kRecorded}, o.lr.lr);
  visit(Flag{"--min-lr", "Learning rate at the end of decay", kRecorded}, o.lr.min_lr);
  visit(Flag{"--lr-warmup-samples", "Samples of linear warm-up", kRecorded}, o.lr.warmup_samples);
  visit(Flag{"--lr-decay-samples", "Samples at which decay ends (0: the whole run)", kRecorded},
        o.lr.decay_samples);
  visit(Flag{"--lr-decay-style", "cosine, linear or constant", kRecorded}, o.lr.decay_style);
  visit(Flag{"--adam-beta1", "Adam beta1", kRecorded}, o.adam.beta1);
  visit(Flag{"--adam-beta2", "Adam beta2", kRecorded}, o.adam.beta2);
  visit(Flag{"--adam-eps", "Adam epsilon", kRecorded}, o.adam.eps);
  visit(Flag{"--weight-decay", "Decoupled weight decay (tensors of 2+ dimensions only)", kRecorded},
        o.adam.weight_decay);
  visit(Flag{"--clip-grad", "Global gradient-norm clip (0 = off)", kRecorded}, o.adam.clip_grad);
  visit(Flag{"--seed", "Seed of the initial weights and the data order", kRecorded}, o.seed);
  visit(Flag{"--save", "Checkpoint directory (SAVE/iter_NNNNNNN/checkpoint.h5)"}, o.save);
  visit(Flag{"--save-interval", "Save every N steps (and always at the end when --save is given)"},
        o.save_interval);
  visit(Flag{"--keep-last",
             "Keep only the newest K checkpoints in --save (0 = keep all); older ones are removed only after a "
             "newer one is complete"},
        o.keep_last);
  visit(Flag{"--async-save",
             "Write checkpoints in the background while training goes on: the step loop waits only for a copy of "
             "the state; the next save and the end of the run wait for the file"},
        o.async_save);
  visit(Flag{"--load", "Resume from a checkpoint directory (its 'latest') or an iter_NNNNNNN directory"}, o.load);
  visit(Flag{"--log-interval", "Steps between progress lines"}, o.log_interval);
  visit(Flag{"--sample-interval", "Print a greedy continuation of --sample-prompt every N steps (0: never)"},
        o.sample_interval);
  visit(Flag{"--sample-prompt", "Text the samples while training continue"}, o.sample_prompt);
  visit(Flag{"--sample-tokens", "Tokens each sample while training generates at most"}, o.sample_tokens);
  visit(Flag{"--metrics-file", "JSON-lines metrics file (default: SAVE/metrics.jsonl when --save is given)"},
        o.metrics_file);
  visit(Flag{"--threads", "CPU threads per rank (0: the rank's share of its cores)"}, o.threads);
  visit_timeout_flag(o, visit);
  visit(Flag{"--skip-spike-zscore",
             "Skip a step whose gradient norm is more than Z standard deviations above the mean of the last 100 "
             "accepted steps (0: off; a non-finite loss or norm is always skipped)",
             kRecorded},
        o.skip.spike_zscore);
  visit(Flag{"--max-consecutive-skips", "Stop the run after this many skipped steps in a row"},
        o.skip.max_consecutive);
  visit(Flag{"--skip-steps-file",
             "JSON lines with \"consumed_samples\" (as SAVE/skipped_steps.jsonl): step over those batches "
             "without training on them",
             kRecorded},
        o.skip.steps_file);
  visit(Flag{"--profile",
             "At the end, print where rank 0's steps went: each kind of kernel (products, attention, norms, RoPE, "
             "GELU, MoE dispatch, cross-entropy, optimizer, ...), communication, pipeline waits and the rest"},
        o.profile);
  visit(Flag{"--debug-fail-at-iteration",
             "Testing: make one rank fail at the start of this iteration, to check the job aborts (0: never)"},
        o.debug.fail_at_iteration);
  visit(Flag{"--debug-fail-rank", "Testing: the rank --debug-fail-at-iteration fails on"}, o.debug.fail_rank);
  visit(Flag{"--debug-nan-at-iteration",
             "Testing: make --debug-fail-rank's gradients NaN from this iteration on (0: never)"},
        o.debug.nan_at_iteration);
  visit(Flag{"--debug-nan-iterations", "Testing: how many iterations --debug-nan-at-iteration poisons"},
        o.debug.nan_iterations);
  visit(Flag{"--debug-spike-at-iteration",
             "Testing: multiply --debug-fail-rank's gradients by 1000 at this iteration (0: never)"},
        o.debug.spike_at_iteration);
  visit(Flag{"--debug-slow-ms", "Testing: --debug-fail-rank sleeps this many milliseconds in every step, a straggler"},
        o.debug.slow_ms);
  visit(Flag{"--debug-perturb-weights",
             "Testing: multiply every weight by 1 +- this at the start and after every update, to measure how "
             "far rounding differences carry through a run"},
        o.debug.perturb_weights);
  visit(Flag{"--debug-corrupt-gemm-check",
             "Testing: corrupt the matrix product checked at start-up, to check the run is refused"},
        o.debug.corrupt_gemm_check);
}

template <typename Options, typename Visit>
void visit_eval_flags(Options& o, Visit&& visit) {
  visit(Flag{"--load", "Checkpoint directory or iter_NNNNNNN directory (required)"}, o.load);
  visit(Flag{"--data-path", "Token store prefix (required)"}, o.data_path);
  visit_tokenizer_flags(o.tokenizer, visit);
  visit(Flag{"--eval-samples", "Samples to evaluate (0 = all)"}, o.eval_samples);
  visit(Flag{"--seq-length", "Evaluate at this sequence length (0: the checkpoint's)"}, o.seq_length);
  visit(Flag{"--rotary-base", "RoPE's base (0: the checkpoint's)"}, o.rotary_base);
  visit(Flag{"--rotary-seq-len-interpolation-factor", "RoPE's position interpolation (0: the checkpoint's)"},
        o.rotary_interpolation);
  visit(Flag{"--micro-batch-size", "Samples per forward pass"}, o.micro_batch_size);
  visit(Flag{"--bf16", "Evaluate in bf16 (the weights rounded from the checkpoint's fp32 ones)"}, o.bf16);
  visit(Flag{"--threads", "CPU threads per rank (0: the rank's share of its cores)"}, o.threads);
  visit_timeout_flag(o, visit);
  visit_layout_flags(o, visit);
}

template <typename Options, typename Visit>
void visit_generate_flags(Options& o, Visit&& visit) {
  visit(Flag{"--load", "Checkpoint directory or iter_NNNNNNN directory (required)"}, o.load);
  visit(Flag{"--prompt", "Text to continue (with the checkpoint's tokenizer, no end-of-document token)"}, o.prompt);
  visit_tokenizer_flags(o.tokenizer, visit);
  visit(Flag{"--prompts",
             "JSON-lines file, one object a line with \"prompt\" and optionally its own \"max_new_tokens\" "
             "(instead of --prompt)"},
        o.prompts_file);
  visit(Flag{"--max-new-tokens", "Tokens to generate at most a prompt (also stops at end of document or context)"},
        o.max_new_tokens);
  visit(Flag{"--temperature", "Softmax temperature (0: greedy, the highest logit, ties to the lower id)"},
        o.sampling.temperature);
  visit(Flag{"--top-k", "Sample among the K most likely tokens (0: all)"}, o.sampling.top_k);
  visit(Flag{"--top-p", "Sample among the most likely tokens holding probability P, in (0, 1]"}, o.sampling.top_p);
  visit(Flag{"--seed", "Seed of the sampling"}, o.sampling.seed);
  visit(Flag{"--max-batch", "Sequences generated together at most (each with its key/value cache)"}, o.max_batch);
  visit(Flag{"--batching",
             "continuous (a finished sequence's slot takes the next prompt at the next step) or static (the next "
             "prompts wait until the whole batch has finished)"},
        o.batching);
  visit(Flag{"--no-kv-cache",
             "Compute each token from the full forward pass over its prefix, one prompt at a time (the reference "
             "the cache reproduces; slow)"},
        o.no_kv_cache);
  visit(Flag{"--bf16", "Generate in bf16 (the weights rounded from the checkpoint's fp32 ones)"}, o.bf16);
  visit(Flag{"--threads", "CPU threads per rank (0: the rank's share of its cores)"}, o.threads);
  visit_timeout_flag(o, visit);
  visit_layout_flags(o, visit);
}

// plan takes train's flags too, so that a train config works as it is.
template <typename Options, typename Visit>
void visit_plan_flags(Options& o, Visit&& visit) {
  visit_train_flags(o.train, visit);
  visit(Flag{"--num-gpus", "GPUs (the world size TP x PP x DP; 0: TP x PP)"}, o.num_gpus);
  visit(Flag{"--gpu", "GPU of the cluster: a100-40gb, a100-80gb, h100-80gb or h200 (without it: counts and bytes "
                      "only)"},
        o.gpu);
  visit(Flag{"--precision",
             "fp32 or bf16 (mixed precision: bf16 weights, fp32 gradients and optimizer, as --bf16 trains); "
             "default bf16 with --gpu or --bf16, else fp32"},
        o.precision);
  visit(Flag{"--compute-efficiency", "Share of the GPU's peak the matrix products reach, for the estimated step time"},
        o.compute_efficiency);
  visit(Flag{"--mfu", "Assumed model FLOPs utilisation for the time and cost (0: estimated)"}, o.mfu);
  visit(Flag{"--gpu-hour-cost", "Price of one GPU-hour, for the cost of the run"}, o.gpu_hour_cost);
  visit(Flag{"--train-tokens", "Tokens to train on, for the days and cost of the run"}, o.train_tokens);
  visit(Flag{"--serve",
             "Serving figures for the layout: weights per GPU at fp16/fp8, KV cache per sequence, memory-bandwidth "
             "bound on tokens/s"},
        o.serve);
  visit(Flag{"--search",
             "Every (TP, PP, DP, micro-batch, recompute) of --num-gpus that fits --gpu's memory, ranked by "
             "estimated throughput, and why the others were dropped"},
        o.search);
  visit(Flag{"--search-max-tp", "Largest TP the search tries (0: the GPUs of a node, 8)"}, o.search_max_tp);
  visit(Flag{"--search-max-micro-batch-size", "Largest micro-batch the search tries"},
        o.search_max_micro_batch_size);
  visit(Flag{"--json", "Print one JSON object instead of the table"}, o.json);
}

}  // namespace mt
