#include "launch/cli.h"

#include <fmt/format.h>

#include <filesystem>

#include "launch/version.h"
#include "runtime/check.h"

namespace mt {

namespace {

void add_model_flags(CLI::App* app, TrainOptions& o) {
  ModelConfig& m = o.model;
  app->add_option("--num-layers", m.num_layers, "Transformer layers L")->capture_default_str();
  app->add_option("--hidden-size", m.hidden_size, "Model width d")->capture_default_str();
  app->add_option("--num-attention-heads", m.num_heads, "Query heads H (must divide the width)")
      ->capture_default_str();
  app->add_option("--num-query-groups", m.num_query_groups,
                  "Key/value heads G (1 = multi-query attention; must divide H)")
      ->capture_default_str();
  app->add_option("--ffn-hidden-size", m.ffn_hidden_size, "Hidden size F of each expert's MLP")
      ->capture_default_str();
  app->add_option("--num-experts", m.num_experts, "Experts E per layer (1 = dense MLP)")
      ->capture_default_str();
  app->add_option("--moe-router-topk", m.router_topk, "Experts K each token is routed to")
      ->capture_default_str();
  app->add_option("--moe-aux-loss-coeff", m.aux_loss_coeff, "Load-balancing loss coefficient alpha")
      ->capture_default_str();
  app->add_option("--moe-expert-capacity-factor", m.capacity_factor,
                  "Expert capacity factor c: an expert takes at most ceil(c*K*T/E) of a "
                  "micro-batch's T tokens (0 = no limit)")
      ->capture_default_str();
  app->add_option("--seq-length", m.seq_length, "Sequence length S")->capture_default_str();
  app->add_option("--vocab-size", o.vocab_size_flag,
                  "Vocabulary size before rounding (default: the byte tokenizer's 257)");
  app->add_option("--make-vocab-size-divisible-by", o.make_vocab_size_divisible_by,
                  "Round the vocabulary up to a multiple of this")
      ->capture_default_str();
}

// The layout: TP x PP, the rest of the ranks data-parallel replicas.
void add_layout_flags(CLI::App* app, TopologyConfig& topology, int& first_stage_layers,
                      int& last_stage_layers) {
  app->add_option("--tensor-model-parallel-size,--tp", topology.tensor_parallel, "Tensor-parallel ranks")
      ->capture_default_str();
  app->add_option("--pipeline-model-parallel-size,--pp", topology.pipeline_parallel,
                  "Pipeline-parallel stages")
      ->capture_default_str();
  app->add_option("--decoder-first-pipeline-num-layers", first_stage_layers,
                  "Layers of the first pipeline stage (it also holds the embedding); the rest split "
                  "evenly (0: an even split)");
  app->add_option("--decoder-last-pipeline-num-layers", last_stage_layers,
                  "Layers of the last pipeline stage (0: an even split)");
}

void add_train_flags(CLI::App* app, TrainOptions& o) {
  add_layout_flags(app, o.topology, o.decoder_first_pipeline_num_layers, o.decoder_last_pipeline_num_layers);
  app->add_option("--pipeline-schedule", o.pipeline_schedule,
                  "1f1b (at most PP - stage micro-batches alive a stage) or gpipe (all forwards, then "
                  "all backwards)")
      ->capture_default_str();
  app->add_option("--ddp-bucket-size", o.ddp_bucket_size,
                  "Parameters per data-parallel gradient bucket: each bucket's reduce-scatter starts "
                  "as soon as the backward pass has finished its gradients")
      ->capture_default_str();
  app->add_option("--debug-fail-at-iteration", o.debug_fail_at_iteration,
                  "Testing: make one rank fail at the start of this iteration, to check the job aborts");
  app->add_option("--debug-fail-rank", o.debug_fail_rank, "Testing: the rank --debug-fail-at-iteration fails on")
      ->capture_default_str();
  app->add_option("--debug-perturb-weights", o.debug_perturb_weights,
                  "Testing: multiply every weight by 1 +- this at the start and after every update, to "
                  "measure how far rounding differences carry through a run");
  app->add_flag("--debug-corrupt-gemm-check", o.debug_corrupt_gemm_check,
                "Testing: corrupt the matrix product checked at start-up, to check the run is refused");
  app->add_option("--micro-batch-size", o.micro_batch_size, "Samples per micro-batch")
      ->capture_default_str();
  app->add_option("--global-batch-size", o.global_batch_size,
                  "Samples per optimizer step (gradients accumulate over micro-batches)")
      ->capture_default_str();
  app->add_option("--rampup-batch-size", o.rampup_batch_size,
                  "Batch ramp-up START INCR SAMPLES: the global batch starts at START and grows by "
                  "INCR at even steps until --global-batch-size after SAMPLES samples")
      ->expected(3);
  app->add_option("--data-path", o.data_path,
                  "Token stores (PREFIX.bin + PREFIX.idx): PREFIX, or NAME=PREFIX for each source "
                  "of a blend, e.g. text=data/text code=data/code")
      ->expected(1, -1)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  app->add_option("--data-epochs", o.data_epochs,
                  "Epochs of each named source, NAME=EPOCHS (fractions allowed), e.g. text=2 "
                  "code=4; sources are interleaved in proportion to epochs x size. A single "
                  "source without one repeats as often as the run needs")
      ->expected(1, -1)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  app->add_option("--train-iters", o.train_iters, "Optimizer steps to train for");
  app->add_option("--train-samples", o.train_samples, "Samples to train for (instead of --train-iters)");
  app->add_option("--lr", o.lr.lr, "Peak learning rate")->capture_default_str();
  app->add_option("--min-lr", o.lr.min_lr, "Learning rate at the end of decay")->capture_default_str();
  app->add_option("--lr-warmup-samples", o.lr.warmup_samples, "Samples of linear warm-up")
      ->capture_default_str();
  app->add_option("--lr-decay-samples", o.lr.decay_samples,
                  "Samples at which decay ends (default: the whole run)");
  app->add_option("--lr-decay-style", o.lr.decay_style, "cosine, linear or constant")
      ->capture_default_str();
  app->add_option("--adam-beta1", o.adam.beta1, "Adam beta1")->capture_default_str();
  app->add_option("--adam-beta2", o.adam.beta2, "Adam beta2")->capture_default_str();
  app->add_option("--adam-eps", o.adam.eps, "Adam epsilon")->capture_default_str();
  app->add_option("--weight-decay", o.adam.weight_decay,
                  "Decoupled weight decay (tensors of 2+ dimensions only)")
      ->capture_default_str();
  app->add_option("--clip-grad", o.adam.clip_grad, "Global gradient-norm clip (0 = off)")
      ->capture_default_str();
  app->add_option("--seed", o.seed, "Seed of the initial weights and the data order")
      ->capture_default_str();
  app->add_option("--save", o.save, "Checkpoint directory (SAVE/iter_NNNNNNN/checkpoint.h5)");
  app->add_option("--save-interval", o.save_interval,
                  "Save every N steps (and always at the end when --save is given)")
      ->capture_default_str();
  app->add_option("--keep-last", o.keep_last,
                  "Keep only the newest K checkpoints in --save (0 = keep all); older ones are removed "
                  "only after a newer one is complete")
      ->capture_default_str();
  app->add_option("--load", o.load,
                  "Resume from a checkpoint directory (its 'latest') or an iter_NNNNNNN directory");
  app->add_option("--log-interval", o.log_interval, "Steps between progress lines")
      ->capture_default_str();
  app->add_option("--metrics-file", o.metrics_file,
                  "JSON-lines metrics file (default: SAVE/metrics.jsonl when --save is given)");
  app->add_option("--threads", o.threads, "CPU threads per rank (default: the rank's share of its cores)");
}

// TOML config files; keys are the long flag names without dashes. (CLI11
// 2.1 reads config files for the root app only, so parse_command_line
// applies the subcommand's file itself.)
void add_config_flag(CLI::App* app, std::string& path) {
  app->add_option("--config", path,
                  "TOML file of flags (keys are the flag names without '--'); the command line wins")
      ->configurable(false);
}

void apply_config_file(CLI::App* app, const std::string& path) {
  MT_CHECK(std::filesystem::is_regular_file(path), "--config {}: no such file", path);
  std::vector<CLI::ConfigItem> items;
  try {
    items = CLI::ConfigTOML().from_file(path);
  } catch (const CLI::ParseError& e) {
    MT_FAIL("--config {}: {}", path, e.what());
  }
  for (const CLI::ConfigItem& item : items) {
    const std::string key = item.fullname();
    CLI::Option* opt = app->get_option_no_throw("--" + key);
    MT_CHECK(opt != nullptr && opt->get_configurable(),
             "--config {}: unknown key '{}' (keys are the long flag names of '{}' without '--')",
             path, key, app->get_name());
    if (opt->count() > 0) continue;  // the command line wins
    opt->add_result(item.inputs);
    try {
      opt->run_callback();
    } catch (const CLI::ParseError& e) {
      MT_FAIL("--config {}: key '{}': {}", path, key, e.what());
    }
  }
}

}  // namespace

std::unique_ptr<Cli> make_cli() {
  auto cli = std::make_unique<Cli>();
  cli->app = std::make_unique<CLI::App>(
      "moetrain: train Mixture-of-Experts language models with tensor, pipeline and ZeRO-1 "
      "data parallelism");
  CLI::App& app = *cli->app;
  app.require_subcommand(1);
  app.set_version_flag("--version", fmt::format("moetrain {}", kMoetrainVersion));

  cli->train = app.add_subcommand("train", "Train a model");
  // As with Megatron's argparse, a flag given twice takes the last value, so
  // scripts can append overrides.
  cli->train->option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  add_config_flag(cli->train, cli->train_config);
  add_model_flags(cli->train, cli->train_options);
  add_train_flags(cli->train, cli->train_options);

  cli->eval = app.add_subcommand(
      "eval", "Mean cross-entropy over the first N samples of a store in storage order; prints a "
              "JSON line with \"loss\" and \"tokens\"");
  cli->eval->option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  add_config_flag(cli->eval, cli->eval_config);
  EvalOptions& e = cli->eval_options;
  cli->eval->add_option("--load", e.load, "Checkpoint directory or iter_NNNNNNN directory (required)");
  cli->eval->add_option("--data-path", e.data_path, "Token store prefix (required)");
  cli->eval->add_option("--eval-samples", e.eval_samples, "Samples to evaluate (0 = all)")
      ->capture_default_str();
  cli->eval->add_option("--micro-batch-size", e.micro_batch_size, "Samples per forward pass")
      ->capture_default_str();
  cli->eval->add_option("--threads", e.threads, "CPU threads per rank (default: the rank's share)");
  add_layout_flags(cli->eval, e.topology, e.decoder_first_pipeline_num_layers, e.decoder_last_pipeline_num_layers);

  // plan: train's flags (so that a train config works as it is) and the cluster.
  cli->plan = app.add_subcommand(
      "plan", "Layout and cost planner: parameters, FLOPs, per-GPU memory, pipeline bubble, communication, "
              "step time and cost of a run (or serving figures), without running the model");
  cli->plan->option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  add_config_flag(cli->plan, cli->plan_config);
  PlanOptions& pl = cli->plan_options;
  add_model_flags(cli->plan, pl.train);
  add_train_flags(cli->plan, pl.train);
  cli->plan->add_option("--num-gpus", pl.num_gpus, "GPUs (the world size TP x PP x DP; default TP x PP)");
  cli->plan->add_option("--gpu", pl.gpu, "GPU of the cluster: a100-40gb, a100-80gb, h100-80gb or h200 "
                                         "(without it: counts and bytes only)");
  cli->plan->add_option("--precision", pl.precision,
                        "fp32 (as the CPU build trains) or bf16 (Megatron mixed precision: bf16 weights, fp32 "
                        "gradients and optimizer); default bf16 with --gpu, else fp32");
  cli->plan->add_option("--recompute-granularity", pl.recompute_granularity,
                        "Activation recomputation: none, selective (attention scores) or full (each layer from "
                        "its input)")
      ->capture_default_str();
  cli->plan->add_option("--compute-efficiency", pl.compute_efficiency,
                        "Share of the GPU's peak the matrix products reach, for the estimated step time")
      ->capture_default_str();
  cli->plan->add_option("--mfu", pl.mfu, "Assumed model FLOPs utilisation for the time and cost (default: estimated)");
  cli->plan->add_option("--gpu-hour-cost", pl.gpu_hour_cost, "Price of one GPU-hour, for the cost of the run");
  cli->plan->add_option("--train-tokens", pl.train_tokens, "Tokens to train on, for the days and cost of the run");
  cli->plan->add_flag("--serve", pl.serve,
                      "Serving figures for the layout: weights per GPU at fp16/fp8, KV cache per sequence, "
                      "memory-bandwidth bound on tokens/s");
  cli->plan->add_flag("--search", pl.search,
                      "Every (TP, PP, DP, micro-batch, recompute) of --num-gpus that fits --gpu's memory, ranked "
                      "by estimated throughput, and why the others were dropped");
  cli->plan->add_option("--search-max-tp", pl.search_max_tp,
                        "Largest TP the search tries (default: the GPUs of a node, 8)");
  cli->plan->add_option("--search-max-micro-batch-size", pl.search_max_micro_batch_size,
                        "Largest micro-batch the search tries")
      ->capture_default_str();
  cli->plan->add_flag("--json", pl.json, "Print one JSON object instead of the table");

  cli->prepare_data = app.add_subcommand(
      "prepare-data", "Tokenize text files with the byte tokenizer into a Megatron indexed "
                      "dataset (PREFIX.bin + PREFIX.idx); each file is one document");
  data::PrepareDataConfig& p = cli->prepare_options;
  cli->prepare_data->add_option("--input", p.inputs, "Files or directories (walked recursively)")
      ->required()
      ->expected(1, -1);
  cli->prepare_data->add_option("--output-prefix", p.output_prefix, "Writes PREFIX.bin and PREFIX.idx")
      ->required();
  cli->prepare_data->add_option("--extensions", p.extensions,
                                "Only files with these extensions, comma separated (e.g. .h,.hpp)")
      ->delimiter(',');

  cli->inspect = app.add_subcommand(
      "inspect", "Print a checkpoint's attributes and every tensor's shape, dtype and L2 norm");
  InspectOptions& in = cli->inspect_options;
  cli->inspect->add_option("path", in.path,
                           "A checkpoint.h5, an iter_NNNNNNN directory, or a --save directory (its 'latest')")
      ->required();
  cli->inspect->add_flag("--json", in.json, "Print one JSON object instead of the tables");
  return cli;
}

void parse_command_line(Cli& cli, int argc, const char* const* argv) {
  cli.app->parse(argc, argv);
  if (cli.train->parsed() && !cli.train_config.empty()) apply_config_file(cli.train, cli.train_config);
  if (cli.eval->parsed() && !cli.eval_config.empty()) apply_config_file(cli.eval, cli.eval_config);
  if (cli.plan->parsed() && !cli.plan_config.empty()) apply_config_file(cli.plan, cli.plan_config);
}

}  // namespace mt
