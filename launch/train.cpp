// `moetrain train`: the training loop. A step consumes the next global batch
// of stream positions (its size from the batch schedule), cut into
// micro-batches whose gradients accumulate; the loss is the mean CE over all
// the batch's tokens plus the mean over micro-batches of their summed router
// losses, aux and z (docs/design.md sections 3 and 8).
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <limits>
#include <memory>
#include <optional>
#include <thread>

#include "data/batch_schedule.h"
#include "data/blended_stream.h"
#include "data/byte_tokenizer.h"
#include "data/data_sources.h"
#include "data/indexed_dataset.h"
#include "data/sample_stream.h"
#include "launch/checkpoint.h"
#include "launch/commands.h"
#include "launch/generation.h"
#include "launch/loss_over_samples.h"
#include "launch/option_tables.h"
#include "launch/training_log.h"
#include "launch/stop_signals.h"
#include "parallel/pipeline_runner.h"
#include "model/transformer.h"
#include "optim/adamw.h"
#include "optim/lr_schedule.h"
#include "optim/master_weights.h"
#include "parallel/grad_sync.h"
#include "runtime/check.h"
#include "runtime/cpu_backend.h"
#include "runtime/gemm_check.h"
#include "runtime/matmul_peak.h"
#include "runtime/threads.h"
#include "parallel/topology.h"
#include "runtime/watchdog.h"

namespace mt {

namespace {

// What decides the trained model: its shape and the recorded flags.
nlohmann::json run_config_json(const TrainOptions& o) {
  nlohmann::json config = {{"model", model_config_to_json(o.model)}};
  visit_train_flags(o, [&](const Flag& f, const auto& member) {
    if (f.recorded) config[flag_key(f)] = member;
  });
  return config;
}

// A checkpoint of another model shape cannot be resumed: name every field
// that differs. The context (sequence length, RoPE, document resets) may
// change: its changes are returned, " seq_length: checkpoint 1024 vs run
// 4096; ...".
std::string check_same_model(const ModelConfig& ours, const ModelConfig& saved, const std::string& path) {
  const nlohmann::json mine = model_config_to_json(ours), theirs = model_config_to_json(saved);
  std::string diffs, context;
  for (const auto& [key, value] : mine.items()) {
    if (theirs.at(key) == value) continue;
    std::string& list = is_context_key(key) ? context : diffs;
    list += fmt::format(" {}: checkpoint {} vs run {};", key, theirs.at(key).dump(), value.dump());
  }
  MT_CHECK(diffs.empty(), "checkpoint {} is of a different model:{}", path, diffs);
  return context;
}

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

// --valid-data-path: the samples each validation evaluates, the first
// --eval-iters x --global-batch-size of the store in storage order.
struct ValidationSet {
  explicit ValidationSet(const TrainOptions& o)
      : store(o.valid_data_path), samples(store, o.model.seq_length, 0), count(o.eval_iters * o.global_batch_size) {
    store.check_token_range(o.model.vocab_size);
    MT_CHECK(uint64_t(count) <= samples.num_samples(),
             "--valid-data-path {} holds {} samples of {}+1 tokens, too few for --eval-iters {} x "
             "--global-batch-size {} = {}",
             o.valid_data_path, samples.num_samples(), o.model.seq_length, o.eval_iters, o.global_batch_size, count);
  }
  data::IndexedDataset store;
  data::SampleStream samples;
  int64_t count;
};

// The CPU backend in precision T, its products checked on every rank;
// timed into `profile` when given (--profile).
template <typename T>
std::unique_ptr<Backend<T>> checked_backend(Communicator& world, bool corrupt_gemm_check, OpTimes* profile) {
  std::unique_ptr<Backend<T>> be = make_cpu_backend<T>();
  check_gemm_on_every_rank(*be, world, corrupt_gemm_check);
  if (profile) be = make_profiling_backend(std::move(be), *profile);
  return be;
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
std::vector<ShardRegion> shard_regions(const Parameters<T>& params, Topology& topo) {
  std::vector<ShardRegion> regions;
  for (const FlatRegion& r : params.regions)
    regions.push_back({{r.begin, r.end}, r.experts ? topo.edp() : topo.dp()});
  return regions;
}

// One rank's share of a training run: what the set-up builds and each step
// uses. Members are built in declaration order. T: the model's precision
// (float, or bf16 with --bf16); gradients and the optimizer are float32.
template <typename T>
struct Training {
  explicit Training(const TrainOptions& options);

  const TrainOptions& o;
  Topology topo;
  Watchdog watchdog;  // stops the job when this rank makes no progress
  const bool root;
  const int threads;
  const data::BatchSchedule schedule;
  double stream_seconds = 0;  // to build the blended stream
  data::BlendedStream stream;
  std::unique_ptr<ValidationSet> validation;  // --valid-data-path, or none
  StepProfile profile;  // --profile
  std::unique_ptr<Backend<T>> be;
  Transformer<T> model;
  Parameters<T>& params;
  GradSync<float> grad_sync;
  AdamW<float> optim;
  MasterWeights<T> master;
  PipelineRunner<T> pipeline;
  StepGuard guard;              // which steps may update the model
  const nlohmann::json config;  // the run configuration each checkpoint records
  TrainState state;
  SourceProgress progress;
  int64_t run_samples = 0;  // the run ends here, at --train-iters, or when the data is used up
  double peak_gflops = 0;   // the job's matrix-product peak, for MFU
  int64_t saved_iteration = -1;
  std::unique_ptr<AsyncCheckpointSaver> async_saver;  // --async-save
  int64_t background_iteration = -1;                  // the iteration it saves
  std::vector<int32_t> batch;  // the step's micro-batches, [micro-batches][micro][S+1]
};

template <typename T>
Training<T>::Training(const TrainOptions& options)
    : o(options),
      topo(MPI_COMM_WORLD, o.topology),
      watchdog(o.distributed_timeout_minutes * 60.0, topo.world_rank()),
      root(topo.world_rank() == 0),
      threads(apply_thread_count(o.threads, MPI_COMM_WORLD)),
      schedule(o.global_batch_size, o.micro_batch_size, topo.dp().size, o.rampup),
      stream(open_stream(o, &stream_seconds)),
      validation(o.valid_data_path.empty() ? nullptr : std::make_unique<ValidationSet>(o)),
      be(checked_backend<T>(topo.world(), o.debug_corrupt_gemm_check, o.profile ? &profile.ops : nullptr)),
      model(*be, o.model, o.micro_batch_size, topo.tp(),
            stage_span(o.model.num_layers, topo.coords().pp, topo.pp().size,
                       o.decoder_first_pipeline_num_layers, o.decoder_last_pipeline_num_layers),
            topo.dp().size, o.recompute, topo.ep()),
      params(model.params()),
      grad_sync(be->acc(), shard_regions(params, topo), tp_partial_ranges(params), topo.tp(), size_t(o.ddp_bucket_size)),
      // The gradient norm sums over every group that holds other elements.
      optim(be->acc(), o.adam, shard_segments(params.tensors, grad_sync.shard(), topo.tp().rank), grad_sync.shard_size(),
            {topo.tp(), topo.pp(), topo.dp()}),
      master(*be, params, grad_sync),
      pipeline(model, topo.pp(),
               o.schedule),
      guard(o.skip, o.save, root),
      config(run_config_json(o)) {
  master.set(params.template initial_values<float>(o.seed).data());
  if (o.async_save && !o.save.empty()) async_saver = std::make_unique<AsyncCheckpointSaver>(topo, params.padded_size());
}

// --load: the weights, moments and position of the checkpoint it names.
template <typename T>
void resume_from_checkpoint(Training<T>& t) {
  CheckpointInfo info;
  std::string context_change;
  const std::string path = load_newest_intact(t.o.load, t.topo.world(), [&](const std::string& p) {
    info = read_checkpoint_info(p, MPI_COMM_WORLD);
    context_change = check_same_model(t.o.model, info.model, p);
    load_checkpoint(p, MPI_COMM_WORLD, t.params, &t.optim, &t.grad_sync, &t.master);
  });
  t.state = info.state;
  if (info.skip_guard.is_object()) t.guard.restore(info.skip_guard);
  if (!t.root) return;
  fmt::print("resumed from {} at iteration {} ({} samples consumed)\n", path, t.state.iteration,
             t.state.consumed_samples);
  if (!context_change.empty())
    fmt::print("context change (the samples from here on are of the new length):{}\n", context_change);
  // The stream position means the same samples only with the same data and
  // seed; a change may be deliberate, so it is reported, not refused.
  for (const char* key : {"data_path", "data_epochs", "seed", "rampup_batch_size"})
    if (info.config.contains(key) && info.config.at(key) != t.config.at(key))
      fmt::print("warning: --{} differs from the checkpoint's ({} now, {} then): the run goes on from "
                 "sample {} of a different stream\n",
                 flag_name(key), t.config.at(key).dump(), info.config.at(key).dump(),
                 t.state.consumed_samples);
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

// --debug-perturb-weights: the optimizer's weights moved (the float32
// master weights under bf16), and the model's from them.
template <typename T>
void perturb_weights(Training<T>& t) {
  std::vector<float> weights(t.params.padded_size());
  t.master.gather(weights.data());
  t.params.perturb(weights.data(), t.o.debug_perturb_weights, uint64_t(t.state.iteration));
  t.master.set(weights.data());
}

// One optimizer step: forward and backward of every micro-batch through the
// pipeline, gradients reduce-scattered over the replicas, the AdamW update
// of this rank's shard and the all-gather of the new weights. The loss is
// the mean CE over the global batch's tokens plus the mean over
// micro-batches of their summed router losses (aux, z).
template <typename T>
StepOutcome train_step(Training<T>& t, const std::vector<const int32_t*>& micro_batches, int64_t global) {
  const auto start = std::chrono::steady_clock::now();
  play_straggler(t);
  const double tp_seconds = t.topo.tp().comm->all_reduce_seconds;
  const GradSyncStats dp_before = t.grad_sync.stats;
  const int64_t tokens = global * t.o.model.seq_length;
  const double micro_batches_all_replicas = double(micro_batches.size()) * t.topo.dp().size;
  const double lr = learning_rate(t.o.lr, t.state.consumed_samples);
  float* grads = t.params.grads.data();
  t.be->acc().fill(grads, 0.0f, t.params.padded_size());
  PipelineStats pipeline_stats;
  t.grad_sync.start_step();
  const GradsReady ready = [&](size_t from) { t.grad_sync.ready_from(grads, from); };
  const MicroBatchLoss l = t.pipeline.step(micro_batches, t.o.micro_batch_size, 1.0 / double(tokens),
                                           1.0 / micro_batches_all_replicas, &pipeline_stats, &ready);
  t.grad_sync.finish(grads);
  float* shard = t.grad_sync.shard_grads(grads);
  inject_bad_gradients(t, shard);
  double sums[3] = {l.ce_sum, l.aux, l.z};  // CE from the last stage, the router losses from every stage's layers
  t.topo.pp().all_reduce_sum(sums, 3);
  t.topo.dp().all_reduce_sum(sums, 3);
  const double loss = sums[0] / double(tokens);
  // The loss and the norm are the same on every rank, and so is the verdict.
  const double grad_norm = t.optim.grad_norm(shard);
  const std::string skip = t.guard.verdict(loss, grad_norm);
  if (skip.empty()) {
    t.optim.update(t.master.updated(), shard, lr, grad_norm, t.master.packed());
    t.master.publish();
    t.guard.accept(grad_norm);
  } else {
    t.guard.skip(t.state.iteration + 1, t.state.consumed_samples, global, loss, grad_norm, skip);
  }
  t.state.iteration += 1;
  t.state.consumed_samples += global;
  t.state.consumed_tokens += tokens;
  if (t.o.debug_perturb_weights != 0.0) perturb_weights(t);
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
          t.topo.tp().comm->all_reduce_seconds - tp_seconds,
          dp.exposed_seconds - dp_before.exposed_seconds + dp.all_gather_seconds - dp_before.all_gather_seconds};
}

// --valid-data-path: every --eval-interval steps and at the end, the mean
// loss over the validation samples on the training layout, outside the
// interval's measurements.
template <typename T>
std::optional<double> validate_if_due(Training<T>& t, IntervalLog<T>& log) {
  if (!t.validation || (t.state.iteration % t.o.eval_interval != 0 && run_continues(t))) return std::nullopt;
  return log.outside_interval([&] {
    return loss_over_samples(t.pipeline, t.topo, t.validation->samples, t.validation->count, t.o.model.seq_length,
                             t.o.micro_batch_size)
        .mean();
  });
}

// --sample-interval: llm.c's samples while training, a greedy continuation
// of --sample-prompt, outside the interval's measurements.
template <typename T>
void print_sample_if_due(Training<T>& t, IntervalLog<T>& log) {
  if (t.o.sample_interval == 0 || t.state.iteration % t.o.sample_interval != 0) return;
  const Continuation c = log.outside_interval([&] {
    return continue_prompt(t.pipeline, t.model, t.topo, data::ByteTokenizer::encode(t.o.sample_prompt),
                           t.o.sample_tokens, Sampling{.temperature = 0}, uint64_t(t.state.iteration));
  });
  if (!t.root) return;
  fmt::print("sample at step {}: {}{}\n", t.state.iteration, t.o.sample_prompt, data::ByteTokenizer::decode(c.tokens));
  std::fflush(stdout);
}

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

// --async-save: waits for the save in flight, and says when it finished.
template <typename T>
void wait_for_background_save(Training<T>& t) {
  if (!t.async_saver) return;
  const auto start = std::chrono::steady_clock::now();
  const std::optional<SaveStats> saved = t.async_saver->wait();
  const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (!saved || !t.root) return;
  fmt::print("saved checkpoint {}/{} in the background in {:.3f} s ({:.2f} GB/s); waited {:.3f} s for it\n",
             t.o.save, checkpoint_dir_name(t.background_iteration), saved->seconds,
             double(saved->bytes) / saved->seconds / 1e9, waited);
  std::fflush(stdout);
}

// Saves unless there is no --save or this iteration is already saved: in
// the background with --async-save (the one before waited for), except the
// run's last save, which has nothing to overlap.
template <typename T>
void save_checkpoint_and_time(Training<T>& t, bool last = false) {
  if (t.o.save.empty() || t.saved_iteration == t.state.iteration) return;
  wait_for_background_save(t);
  if (t.async_saver && !last) {
    const double stalled = t.async_saver->start(t.o.save, t.o.model, t.params, t.optim, t.grad_sync, t.state,
                                                t.o.seed, t.config, resume_attributes(t), t.o.keep_last, &t.master);
    t.saved_iteration = t.background_iteration = t.state.iteration;
    if (t.root)
      fmt::print("saving checkpoint {}/{} in the background (the snapshot took {:.3f} s)\n", t.o.save,
                 checkpoint_dir_name(t.state.iteration), stalled);
    return;
  }
  const SaveStats saved = save_checkpoint(t.o.save, t.topo, t.o.model, t.params, t.optim, t.grad_sync, t.state,
                                          t.o.seed, t.config, resume_attributes(t), t.o.keep_last, &t.master);
  t.saved_iteration = t.state.iteration;
  if (!t.root) return;
  fmt::print("saved checkpoint {}/{} in {:.3f} s ({:.2f} GB/s)\n", t.o.save,
             checkpoint_dir_name(t.state.iteration), saved.seconds, double(saved.bytes) / saved.seconds / 1e9);
  std::fflush(stdout);
}

// Saves at each --save-interval; true when a stop signal (a preemption
// notice) reached any rank, so that every rank stops at this boundary.
template <typename T>
bool save_and_decide_to_stop(Training<T>& t) {
  if (t.o.save_interval > 0 && t.state.iteration % t.o.save_interval == 0) save_checkpoint_and_time(t);
  int sig = stop_signal();
  t.topo.world().all_reduce_max(&sig, 1);
  if (sig != 0 && t.root)
    fmt::print("received {}: saving at iteration {} and stopping\n", signal_name(sig), t.state.iteration);
  return sig != 0;
}

// --debug-nan-at-iteration, --debug-spike-at-iteration: one rank's share
// of the reduced gradients made NaN or 1000 times larger.
template <typename T>
void inject_bad_gradients(Training<T>& t, float* shard) {
  const int64_t it = t.state.iteration + 1;
  if (t.topo.world_rank() != t.o.debug_fail_rank || t.grad_sync.shard_size() == 0) return;
  if (t.o.debug_nan_at_iteration > 0 && it >= t.o.debug_nan_at_iteration &&
      it < t.o.debug_nan_at_iteration + t.o.debug_nan_iterations)
    shard[0] = std::numeric_limits<float>::quiet_NaN();
  if (t.o.debug_spike_at_iteration == it) t.be->acc().scale(t.grad_sync.shard_size(), 1000.0f, shard);
}

// --debug-slow-ms: --debug-fail-rank's compute takes that much longer.
template <typename T>
void play_straggler(const Training<T>& t) {
  if (t.o.debug_slow_ms > 0 && t.topo.world_rank() == t.o.debug_fail_rank)
    std::this_thread::sleep_for(std::chrono::milliseconds(t.o.debug_slow_ms));
}

// A batch --skip-steps-file lists: consumed without a forward or backward
// pass, logged as a skipped step.
template <typename T>
StepOutcome step_over(Training<T>& t, int64_t global) {
  const double lr = learning_rate(t.o.lr, t.state.consumed_samples);
  const double nan = std::numeric_limits<double>::quiet_NaN();
  t.guard.skip(t.state.iteration + 1, t.state.consumed_samples, global, nan, nan, "--skip-steps-file lists it");
  t.progress.count(t.stream, t.state.consumed_samples, t.state.consumed_samples + global);
  t.state.iteration += 1;
  t.state.consumed_samples += global;
  t.state.consumed_tokens += global * t.o.model.seq_length;
  StepOutcome out;
  out.lr = lr;
  out.grad_norm = nan;
  out.skipped = true;
  out.samples = global;
  out.tokens = global * t.o.model.seq_length;
  return out;
}

// Before the first step: --save must be writable with room for one
// checkpoint, so that a wrong path or a full disk fails in seconds rather
// than at the first save. Rank 0 looks; every rank stops alike.
template <typename T>
void check_save_dir(Training<T>& t) {
  if (t.o.save.empty()) return;
  std::string problem = t.root ? save_dir_problem(t.o.save, checkpoint_size_estimate(t.o.model)) : "";
  t.topo.world().broadcast(problem, 0);
  MT_CHECK(problem.empty(), "{}", problem);
}

template <typename T>
void fail_if_injected(const Training<T>& t) {
  if (t.o.debug_fail_at_iteration == t.state.iteration + 1 && t.topo.world_rank() == t.o.debug_fail_rank)
    MT_FAIL("injected failure at iteration {} on rank {} (--debug-fail-at-iteration)", t.state.iteration + 1,
            t.o.debug_fail_rank);
}

// The run in precision T, from set-up to the last save.
template <typename T>
TrainResult train(const TrainOptions& o) {
  Training<T> t(o);
  check_save_dir(t);
  if (!o.load.empty()) resume_from_checkpoint(t);
  if (o.debug_perturb_weights != 0.0) perturb_weights(t);
  t.run_samples =
      std::min<uint64_t>(requested_samples(o, t.state.iteration, t.state.consumed_samples), t.stream.size());
  t.progress = {t.stream.counts_before(uint64_t(t.state.consumed_samples))};
  StartUpSummary summary{o, t.topo, t.params.size(), gather_memory(t.topo, t.params, t.optim), t.stream,
                         t.stream_seconds, t.run_samples, t.threads, t.be->name(), t.be->library()};
  if (t.root) print_start_up(summary);
  const auto peak_start = std::chrono::steady_clock::now();
  t.peak_gflops = measure_job_matmul_gflops(*t.be, t.topo.world());
  if (t.root)
    fmt::print("matrix-product peak: {:.1f} GFLOP/s, the sum of every rank's best 512x512x512 {} product (MFU's "
               "denominator), measured in {:.0f} ms\n",
               t.peak_gflops, sizeof(T) == 2 ? "bf16" : "float32",
               1e3 * std::chrono::duration<double>(std::chrono::steady_clock::now() - peak_start).count());
  if (t.root && t.validation)
    fmt::print("validation: the first {} samples of {} every {} steps and at the end\n", t.validation->count,
               o.valid_data_path, o.eval_interval);

  IntervalLog<T> log(o, t.topo, t.grad_sync, t.model, t.stream, t.run_samples, metrics_path(o), t.peak_gflops);
  TrainResult result;
  bool first_step_done = false;
  while (run_continues(t)) {
    const int64_t global = t.schedule.global_batch(t.state.consumed_samples);
    if (!data_left_for(t, global)) break;
    set_current_step(t.state.iteration + 1);
    fail_if_injected(t);
    StepOutcome step;
    if (t.guard.listed(t.state.consumed_samples)) {
      step = step_over(t, global);
    } else {
      const std::vector<const int32_t*> micro_batches = read_global_batch(t, global);
      step = train_step(t, micro_batches, global);
    }
    result.iterations = t.state.iteration;
    result.last_loss = step.loss;
    log.add(step);
    log.report(t.state, t.progress, !run_continues(t), validate_if_due(t, log));
    print_sample_if_due(t, log);
    // The profile starts after the first step, which creates the products'
    // kernels (and after the set-up's copies and fills).
    if (o.profile) {
      if (first_step_done)
        t.profile.add(step);
      else
        t.profile.clear();
    }
    first_step_done = true;
    if (save_and_decide_to_stop(t)) {
      result.stopped_by_signal = true;
      break;
    }
  }
  save_checkpoint_and_time(t, /*last=*/true);
  wait_for_background_save(t);
  if (o.profile && t.root) print_profile(t.profile, 0);
  return result;
}

}  // namespace

TrainResult run_train(TrainOptions o) {
  resolve_and_validate(o);
  install_stop_signal_handlers();
  return o.bf16 ? train<bf16>(o) : train<float>(o);
}

}  // namespace mt
