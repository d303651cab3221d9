// A step consumes the next global batch of stream positions (its size from
// the batch schedule), cut into micro-batches whose gradients accumulate;
// the loss is the mean CE over all the batch's tokens plus the mean over
// micro-batches of their summed router losses, aux and z (docs/design.md
// sections 3 and 8).
#include "training/trainer.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <limits>
#include <memory>
#include <optional>

#include "checkpoint/checkpointer.h"
#include "data/batch_schedule.h"
#include "data/blended_stream.h"
#include "data/data_sources.h"
#include "generation/continuation.h"
#include "model/rank_model.h"
#include "optim/adamw.h"
#include "optim/lr_schedule.h"
#include "optim/master_weights.h"
#include "parallel/grad_sync.h"
#include "runtime/check.h"
#include "runtime/gemm_check.h"
#include "runtime/matmul_peak.h"
#include "runtime/threads.h"
#include "runtime/watchdog.h"
#include "tokenizer/text_stream.h"
#include "training/fault_injection.h"
#include "training/stop_signals.h"
#include "training/train_state.h"
#include "training/training_log.h"
#include "training/validation.h"

namespace mt {

namespace {

// "data_epochs" -> "data-epochs"
std::string flag_name(std::string key) {
  std::replace(key.begin(), key.end(), '_', '-');
  return key;
}

data::BlendedStream open_stream(const TrainOptions& o, double* seconds) {
  const auto start = std::chrono::steady_clock::now();
  data::BlendedStream stream(data::parse_sources(o.data_path, o.data_epochs), o.model.seq_length, o.seed);
  for (int s = 0; s < stream.num_sources(); ++s) stream.source(s).store.check_token_range(o.model.vocab_size);
  *seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return stream;
}

ModelLayout model_layout(const TrainOptions& o) {
  return {o.micro_batch_size, o.decoder_first_pipeline_num_layers, o.decoder_last_pipeline_num_layers, o.recompute,
          o.schedule, {.sequence_parallel = o.sequence_parallel, .grads_in_t = o.grad_reduce_in_bf16}};
}

// Flat ranges of the tensors whose gradients are partial sums over TP.
template <typename T>
std::vector<FlatRange> tp_partial_ranges(const Parameters<T>& params) {
  std::vector<FlatRange> ranges;
  for (const ParamTensor& t : params.tensors)
    if (t.partial_grad) ranges.push_back({t.offset, t.offset + t.numel});
  return ranges;
}

// The flat buffers' regions with the group each is summed and sharded
// over: DP, or expert-DP for the experts under expert parallelism.
template <typename T>
std::vector<ShardRegion> shard_regions(const Parameters<T>& params, const Topology& topo) {
  std::vector<ShardRegion> regions;
  for (const FlatRegion& r : params.regions)
    regions.push_back({{r.begin, r.end}, r.experts ? topo.edp_cp() : topo.dp_cp()});
  return regions;
}

// One rank's share of a training run: what the set-up builds and each step
// uses. Members are built in declaration order. T: the model's precision
// (float, or bf16 with --bf16); gradients and the optimizer are float32.
template <typename T>
struct Training {
  Training(const TrainOptions& options, const nlohmann::json& run_config);

  const TrainOptions& o;
  Topology topo;
  Watchdog watchdog;  // stops the job when this rank makes no progress
  const bool root;
  const int threads;
  const FaultInjection faults;  // --debug-*
  const data::BatchSchedule schedule;
  double stream_seconds = 0;  // to build the blended stream
  data::BlendedStream stream;
  std::unique_ptr<ValidationSet> validation;  // --valid-data-path, or none
  StepProfile profile;                        // --profile
  RankModel<T> rank;
  Backend<T>& be;
  Transformer<T>& model;
  Parameters<T>& params;
  PipelineRunner<T>& pipeline;
  GradSync<float> grad_sync;  // float32 gradients; the shards' layout for every run
  // --grad-reduce-in-bf16: the reduce-scatter of the T gradients, and their
  // shard widened for the optimizer when grad_sync packs none of its own.
  std::unique_ptr<GradSync<T>> grad_sync_in_t;
  DeviceBuffer<float> widened_shard;
  AdamW<float> optim;
  MasterWeights<T> master;
  StepGuard guard;              // which steps may update the model
  const nlohmann::json config;  // the run configuration each checkpoint records
  const std::unique_ptr<Tokenizer> tokenizer;  // for --sample-prompt; each checkpoint records its spec
  TrainState state;
  SourceProgress progress;
  int64_t run_samples = 0;  // the run ends here, at --train-iters, or when the data is used up
  double peak_gflops = 0;   // the job's matrix-product peak, for MFU
  Checkpointer<T> checkpointer;
  std::vector<int32_t> batch;  // the step's micro-batches, [micro-batches][micro][S+1]
};

// Where the run stands beyond the iteration counters, for the checkpoint's
// attributes: what the next step would use.
template <typename T>
nlohmann::json resume_attributes(const Training<T>& t) {
  const TrainOptions& o = t.o;
  const int64_t consumed = t.state.consumed_samples;
  return nlohmann::json{
      {"lr_schedule", {{"consumed_samples", consumed},
                       {"lr", learning_rate(o.lr, consumed)},
                       {"warmup_samples", o.lr.warmup_samples},
                       {"decay_samples", o.lr.decay_samples},
                       {"decay_style", o.lr.decay_style}}},
      {"rampup", {{"consumed_samples", consumed}, {"global_batch", t.schedule.global_batch(consumed)}}},
      {"data", {{"consumed_samples", consumed}, {"sources", t.progress.json(t.stream)}}},
      // No layer draws random numbers while training: the weights' init
      // and the data order are pure functions of the seed and position.
      {"rng", {{"generator", "philox4x32-10"}, {"seed", o.seed}}},
      {"skip_guard", t.guard.state()}};
}

template <typename T>
Training<T>::Training(const TrainOptions& options, const nlohmann::json& run_config)
    : o(options),
      topo(MPI_COMM_WORLD, o.topology),
      watchdog(o.distributed_timeout_minutes * 60.0, topo.world_rank()),
      root(topo.world_rank() == 0),
      threads(apply_thread_count(o.threads, MPI_COMM_WORLD)),
      faults(o.debug, topo.world_rank()),
      schedule(o.global_batch_size, o.micro_batch_size, topo.dp().size, o.rampup),
      stream(open_stream(o, &stream_seconds)),
      validation(o.valid_data_path.empty() ? nullptr : std::make_unique<ValidationSet>(o)),
      rank(checked_cpu_backend<T>(topo.world(), o.debug.corrupt_gemm_check, o.profile ? &profile.ops : nullptr),
           o.model, model_layout(o), topo),
      be(*rank.be),
      model(rank.model),
      params(model.params()),
      pipeline(rank.pipeline),
      grad_sync(be.acc(), shard_regions(params, topo), tp_partial_ranges(params), topo.tp(),
                size_t(o.ddp_bucket_size)),
      grad_sync_in_t(params.has_grads_in_t()
                         ? std::make_unique<GradSync<T>>(be, shard_regions(params, topo), tp_partial_ranges(params),
                                                         topo.tp(), size_t(o.ddp_bucket_size))
                         : nullptr),
      widened_shard(params.has_grads_in_t() && !grad_sync.sharded()
                        ? DeviceBuffer<float>(be.acc(), grad_sync.shard_size())
                        : DeviceBuffer<float>()),
      // The gradient norm sums over every group that holds other elements.
      optim(be.acc(), o.adam, shard_segments(params.tensors, grad_sync.shard(), topo.tp().rank),
            grad_sync.shard_size(), {topo.tp(), topo.pp(), topo.dp_cp()}),
      master(be, params, grad_sync),
      guard(o.skip, o.save, root),
      config(run_config),
      tokenizer(make_tokenizer(*o.tokenizer_spec)),
      checkpointer({o.save, o.save_interval, o.keep_last, o.async_save},
                   {topo, o.model, params, optim, grad_sync, &master, {model.stage().begin, &model.router_state()}},
                   [this] {
                     return CheckpointAttributes{state.iteration, state.consumed_samples, state.consumed_tokens,
                                                 o.seed, config, resume_attributes(*this), "", o.tokenizer_spec};
                   }) {
  master.set(params.template initial_values<float>(o.seed).data());
}

// --load: the weights, moments and position of the checkpoint it names.
template <typename T>
void resume_from_checkpoint(Training<T>& t) {
  const typename Checkpointer<T>::Loaded loaded = t.checkpointer.load(t.o.load);
  const CheckpointInfo& info = loaded.info;
  t.state = {info.iteration, info.consumed_samples, info.consumed_tokens};
  if (info.skip_guard.is_object()) t.guard.restore(info.skip_guard);
  if (!t.root) return;
  fmt::print("resumed from {} at iteration {} ({} samples consumed)\n", info.path, t.state.iteration,
             t.state.consumed_samples);
  if (!loaded.context_change.empty())
    fmt::print("context change (the samples from here on are of the new length):{}\n", loaded.context_change);
  // The stream position means the same samples only with the same data and
  // seed; a change may be deliberate, so it is reported, not refused.
  for (const char* key : {"data_path", "data_epochs", "seed", "rampup_batch_size"})
    if (info.config.contains(key) && info.config.at(key) != t.config.at(key))
      fmt::print("warning: --{} differs from the checkpoint's ({} now, {} then): the run goes on from "
                 "sample {} of a different stream\n",
                 flag_name(key), t.config.at(key).dump(), info.config.at(key).dump(), t.state.consumed_samples);
}

// Before the first step: the checks, the resume, what rank 0 prints, and
// the matrix-product peak that MFU is measured against.
template <typename T>
void start_up(Training<T>& t) {
  const TrainOptions& o = t.o;
  t.checkpointer.check_save_dir();
  if (!o.load.empty()) resume_from_checkpoint(t);
  t.faults.perturb(t.master, t.params, uint64_t(t.state.iteration));
  t.run_samples =
      std::min<uint64_t>(requested_samples(o, t.state.iteration, t.state.consumed_samples), t.stream.size());
  t.progress = {t.stream.counts_before(uint64_t(t.state.consumed_samples))};
  StartUpSummary summary{o, t.topo, t.params.size(), gather_memory(t.topo, t.model, t.optim), t.stream,
                         t.stream_seconds, t.run_samples, t.threads, t.be.name(), t.be.library()};
  if (t.root) print_start_up(summary);
  const auto peak_start = std::chrono::steady_clock::now();
  t.peak_gflops = measure_job_matmul_gflops(t.be, t.topo.world());
  if (t.root)
    fmt::print("matrix-product peak: {:.1f} GFLOP/s, the sum of every rank's best 512x512x512 {} product (MFU's "
               "denominator), measured in {:.0f} ms\n",
               t.peak_gflops, sizeof(T) == 2 ? "bf16" : "float32",
               1e3 * std::chrono::duration<double>(std::chrono::steady_clock::now() - peak_start).count());
  if (t.root && t.validation)
    fmt::print("validation: the first {} samples of {} every {} steps and at the end\n", t.validation->samples(),
               o.valid_data_path, o.eval_interval);
}

std::string metrics_path(const TrainOptions& o) {
  if (!o.metrics_file.empty() || o.save.empty()) return o.metrics_file;
  std::filesystem::create_directories(o.save);
  return (std::filesystem::path(o.save) / "metrics.jsonl").string();
}

template <typename T>
bool run_continues(const Training<T>& t) {
  if (t.o.train_iters > 0 && t.state.iteration >= t.o.train_iters) return false;
  return t.state.consumed_samples < t.run_samples;
}

// False (and rank 0 says so) when the stream holds too few samples for the
// next global batch.
template <typename T>
bool data_left_for(const Training<T>& t, int64_t global) {
  if (uint64_t(t.state.consumed_samples + global) <= t.stream.size()) return true;
  if (t.root)
    fmt::print("the data is used up: {} of {} samples consumed, too few for a batch of {} ({}); stopping\n",
               t.state.consumed_samples, t.stream.size(), global, t.progress.line(t.stream));
  return false;
}

// This replica's micro-batches of the global batch at the stream position:
// host [micro-batches][micro][S+1]. Every stage reads them: the first embeds
// them, the last needs the targets.
template <typename T>
std::vector<const int32_t*> read_global_batch(Training<T>& t, int64_t global) {
  const int64_t micro = t.o.micro_batch_size, sample_tokens = t.o.model.seq_length + 1;
  const int64_t num_micro = t.schedule.micro_batches(t.state.consumed_samples);
  t.batch.resize(size_t(num_micro * micro * sample_tokens));
  std::vector<const int32_t*> micro_batches;
  for (int64_t j = 0; j < num_micro; ++j) {
    int32_t* mb = t.batch.data() + j * micro * sample_tokens;
    for (int64_t i = 0; i < micro; ++i) {
      const int64_t n = data::sample_position(t.state.consumed_samples, global, t.topo.coords().dp,
                                              t.topo.dp().size, j, micro, i);
      const auto pick = t.stream.pick(uint64_t(n));
      t.stream.source(pick.source).samples.read_sample(pick.sample, mb + i * sample_tokens);
    }
    micro_batches.push_back(mb);
  }
  t.progress.count(t.stream, t.state.consumed_samples, t.state.consumed_samples + global);
  return micro_batches;
}

// The gradient buffer of a step and its ZeRO-1 reduction: float32, or T
// under --grad-reduce-in-bf16 (docs/design.md section 8), whose reduced
// shard is widened to float32 for the optimizer.
template <typename T>
void start_gradients(Training<T>& t) {
  if (!t.grad_sync_in_t) {
    t.be.acc().fill(t.params.grads.data(), 0.0f, t.params.padded_size());
    t.grad_sync.start_step();
    return;
  }
  t.be.fill(t.params.grads_in_t.data(), T(0), t.params.padded_size());
  t.grad_sync_in_t->stats = {};
  t.grad_sync_in_t->start_step();
}

template <typename T>
void gradients_ready_from(Training<T>& t, size_t from) {
  if (t.grad_sync_in_t)
    t.grad_sync_in_t->ready_from(t.params.grads_in_t.data(), from);
  else
    t.grad_sync.ready_from(t.params.grads.data(), from);
}

// Waits for the reduction; the step's float32 gradients of this rank's shard.
template <typename T>
float* finish_gradients(Training<T>& t) {
  if (!t.grad_sync_in_t) {
    t.grad_sync.finish(t.params.grads.data());
    return t.grad_sync.shard_grads(t.params.grads.data());
  }
  GradSync<T>& sync = *t.grad_sync_in_t;
  sync.finish(t.params.grads_in_t.data());
  t.grad_sync.stats += sync.stats;
  float* widened = t.grad_sync.shard_grads(t.widened_shard.data());
  t.be.widen_to_acc(widened, sync.shard_grads(t.params.grads_in_t.data()), sync.shard_size());
  return widened;
}

// One optimizer step: forward and backward of every micro-batch through the
// pipeline, gradients reduce-scattered over the replicas, the AdamW update
// of this rank's shard and the all-gather of the new weights. The loss is
// the mean CE over the global batch's tokens plus the mean over
// micro-batches of their summed router losses (aux, z).
template <typename T>
StepOutcome train_step(Training<T>& t, const std::vector<const int32_t*>& micro_batches, int64_t global) {
  const auto start = std::chrono::steady_clock::now();
  const int64_t iteration = t.state.iteration + 1;
  t.faults.start_step(iteration);
  Communicator& tp_comm = *t.topo.tp().comm;
  const double tp_seconds = tp_comm.all_reduce_seconds + tp_comm.gather_scatter_seconds;
  const GradSyncStats dp_before = t.grad_sync.stats;
  const int64_t tokens = global * t.o.model.seq_length;
  const double micro_batches_all_replicas = double(micro_batches.size()) * t.topo.dp().size;
  const double lr = learning_rate(t.o.lr, t.state.consumed_samples);
  t.model.start_step();
  start_gradients(t);
  PipelineStats pipeline_stats;
  const GradsReady ready = [&](size_t from) { gradients_ready_from(t, from); };
  const MicroBatchLoss l = t.pipeline.step(micro_batches, t.o.micro_batch_size, 1.0 / double(tokens),
                                           1.0 / micro_batches_all_replicas, &pipeline_stats, &ready);
  float* shard = finish_gradients(t);
  t.faults.corrupt_gradients(t.be.acc(), shard, t.grad_sync.shard_size(), iteration);
  double sums[3] = {l.ce_sum, l.aux, l.z};  // CE from the last stage, the router losses from every stage's layers
  t.topo.pp().all_reduce_sum(sums, 3);
  t.topo.dp_cp().all_reduce_sum(sums, 3);  // each CP rank has its tokens' CE
  const double loss = sums[0] / double(tokens);
  // The loss and the norm are the same on every rank, and so is the verdict.
  const double grad_norm = t.optim.grad_norm(shard);
  const std::string skip = t.guard.verdict(loss, grad_norm);
  if (skip.empty()) {
    t.optim.update(t.master.updated(), shard, lr, grad_norm, t.master.packed());
    t.master.publish();
    t.model.update_router_state(t.topo.dp_cp());
    t.guard.accept(grad_norm);
  } else {
    t.guard.skip(iteration, t.state.consumed_samples, global, loss, grad_norm, skip);
  }
  t.state = {iteration, t.state.consumed_samples + global, t.state.consumed_tokens + tokens};
  t.faults.perturb(t.master, t.params, uint64_t(iteration));
  const GradSyncStats& dp = t.grad_sync.stats;
  return {loss,
          sums[1] / micro_batches_all_replicas,
          sums[2] / micro_batches_all_replicas,
          lr,
          grad_norm,
          !skip.empty(),
          global,
          tokens,
          pipeline_stats.wait_seconds,
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(),
          tp_comm.all_reduce_seconds + tp_comm.gather_scatter_seconds - tp_seconds,
          dp.exposed_seconds - dp_before.exposed_seconds + dp.all_gather_seconds - dp_before.all_gather_seconds};
}

// A batch --skip-steps-file lists: consumed without a forward or backward
// pass, logged as a skipped step.
template <typename T>
StepOutcome step_over(Training<T>& t, int64_t global) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  StepOutcome out;
  out.lr = learning_rate(t.o.lr, t.state.consumed_samples);
  out.grad_norm = nan;
  out.skipped = true;
  out.samples = global;
  out.tokens = global * t.o.model.seq_length;
  t.guard.skip(t.state.iteration + 1, t.state.consumed_samples, global, nan, nan, "--skip-steps-file lists it");
  t.progress.count(t.stream, t.state.consumed_samples, t.state.consumed_samples + global);
  t.state = {t.state.iteration + 1, t.state.consumed_samples + global, t.state.consumed_tokens + out.tokens};
  return out;
}

// --valid-data-path: every --eval-interval steps and at the end, the mean
// loss over the validation samples on the training layout, outside the
// interval's measurements.
template <typename T>
std::optional<double> validate_if_due(Training<T>& t, IntervalLog<T>& log) {
  if (!t.validation || (t.state.iteration % t.o.eval_interval != 0 && run_continues(t))) return std::nullopt;
  return log.outside_interval([&] { return t.validation->loss(t.pipeline, t.topo); });
}

// --sample-interval: llm.c's samples while training, a greedy continuation
// of --sample-prompt, outside the interval's measurements.
template <typename T>
void print_sample_if_due(Training<T>& t, IntervalLog<T>& log) {
  if (t.o.sample_interval == 0 || t.state.iteration % t.o.sample_interval != 0) return;
  const std::vector<int32_t> prompt = t.tokenizer->encode(t.o.sample_prompt);
  const Sampling greedy{
      .temperature = 0, .vocab = t.tokenizer->vocab_size(), .eod = t.tokenizer->eod(), .gaps = t.tokenizer->gaps()};
  const Continuation c = log.outside_interval([&] {
    return continue_prompt(t.pipeline, t.model, t.topo, prompt, t.o.sample_tokens, greedy,
                           uint64_t(t.state.iteration));
  });
  if (!t.root) return;
  fmt::print("sample at step {}: {}{}\n", t.state.iteration, t.o.sample_prompt,
             decode_continuation(*t.tokenizer, prompt, c.tokens));
  std::fflush(stdout);
}

// --profile: from the second step on, since the first creates the
// products' kernels (after the set-up's copies and fills).
template <typename T>
void profile_step(Training<T>& t, const StepOutcome& step, bool first) {
  if (!t.o.profile) return;
  if (first)
    t.profile.clear();
  else
    t.profile.add(step);
}

// Saves at each --save-interval; true when a stop signal (a preemption
// notice) reached any rank, so that every rank stops at this boundary.
template <typename T>
bool save_and_decide_to_stop(Training<T>& t) {
  t.checkpointer.save(t.state.iteration);
  int sig = stop_signal();
  t.topo.world().all_reduce_max(&sig, 1);
  if (sig != 0 && t.root)
    fmt::print("received {}: saving at iteration {} and stopping\n", signal_name(sig), t.state.iteration);
  return sig != 0;
}

// The run in precision T, from set-up to the last save.
template <typename T>
TrainResult train(const TrainOptions& o, const nlohmann::json& config) {
  Training<T> t(o, config);
  start_up(t);
  IntervalLog<T> log(o, t.topo, t.grad_sync, t.model, t.stream, t.run_samples, metrics_path(o), t.peak_gflops);
  TrainResult result;
  bool first_step = true;
  while (run_continues(t)) {
    const int64_t global = t.schedule.global_batch(t.state.consumed_samples);
    if (!data_left_for(t, global)) break;
    set_current_step(t.state.iteration + 1);
    const StepOutcome step = t.guard.listed(t.state.consumed_samples)
                                 ? step_over(t, global)
                                 : train_step(t, read_global_batch(t, global), global);
    result.iterations = t.state.iteration;
    result.last_loss = step.loss;
    log.add(step);
    log.report(t.state, t.progress, !run_continues(t), validate_if_due(t, log));
    print_sample_if_due(t, log);
    profile_step(t, step, first_step);
    first_step = false;
    if (save_and_decide_to_stop(t)) {
      result.stopped_by_signal = true;
      break;
    }
  }
  t.checkpointer.save(t.state.iteration, /*force=*/true);
  t.checkpointer.wait();
  if (o.profile && t.root) print_profile(t.profile, 0);
  return result;
}

}  // namespace

TrainResult train(const TrainOptions& o, const nlohmann::json& config) {
  install_stop_signal_handlers();
  return o.bf16 ? train<bf16>(o, config) : train<float>(o, config);
}

}  // namespace mt
