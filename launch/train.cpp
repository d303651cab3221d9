// `moetrain train`: the training loop. A step consumes the next global batch
// of stream positions (its size from the batch schedule), cut into
// micro-batches whose gradients accumulate; the loss is the mean CE over all
// the batch's tokens plus the mean over micro-batches of their summed aux
// losses (docs/design.md section 3).
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <filesystem>

#include "data/batch_schedule.h"
#include "data/blended_stream.h"
#include "data/data_sources.h"
#include "launch/checkpoint.h"
#include "launch/commands.h"
#include "launch/progress.h"
#include "launch/stop_signals.h"
#include "model/pipeline_step.h"
#include "model/transformer.h"
#include "optim/adamw.h"
#include "optim/lr_schedule.h"
#include "parallel/grad_sync.h"
#include "runtime/check.h"
#include "runtime/cpu_backend.h"
#include "runtime/gemm_check.h"
#include "runtime/threads.h"
#include "runtime/topology.h"

namespace mt {

namespace {

nlohmann::json run_config_json(const TrainOptions& o) {
  return {{"model", model_config_to_json(o.model)},
          {"micro_batch_size", o.micro_batch_size},
          {"global_batch_size", o.global_batch_size},
          {"rampup_batch_size", o.rampup_batch_size},
          {"data_path", o.data_path},
          {"data_epochs", o.data_epochs},
          {"train_iters", o.train_iters},
          {"train_samples", o.train_samples},
          {"lr", o.lr.lr},
          {"min_lr", o.lr.min_lr},
          {"lr_warmup_samples", o.lr.warmup_samples},
          {"lr_decay_samples", o.lr.decay_samples},
          {"lr_decay_style", o.lr.decay_style},
          {"adam_beta1", o.adam.beta1},
          {"adam_beta2", o.adam.beta2},
          {"adam_eps", o.adam.eps},
          {"weight_decay", o.adam.weight_decay},
          {"clip_grad", o.adam.clip_grad},
          {"seed", o.seed}};
}

// A checkpoint of another model shape cannot be resumed: name every field
// that differs.
void check_same_model(const ModelConfig& ours, const nlohmann::json& saved, const std::string& path) {
  const nlohmann::json mine = model_config_to_json(ours);
  const nlohmann::json& theirs = saved.at("model");
  std::string diffs;
  for (const auto& [key, value] : mine.items())
    if (!theirs.contains(key) || theirs.at(key) != value)
      diffs += fmt::format(" {}: checkpoint {} vs run {};", key,
                           theirs.contains(key) ? theirs.at(key).dump() : "missing", value.dump());
  MT_CHECK(diffs.empty(), "checkpoint {} is of a different model:{}", path, diffs);
}

// "data_epochs" -> "data-epochs"
std::string flag_name(std::string key) {
  std::replace(key.begin(), key.end(), '_', '-');
  return key;
}

// Consumed samples and epoch of each source, for the logs.
struct SourceProgress {
  std::vector<uint64_t> consumed;
  std::string line(const data::BlendedStream& s) const {
    std::string out;
    for (int i = 0; i < s.num_sources(); ++i)
      out += fmt::format("{}{} {:.2f} ep", i ? ", " : "", s.source(i).spec.name,
                         double(consumed[i]) / double(s.source(i).samples.num_samples()));
    return out;
  }
  nlohmann::json json(const data::BlendedStream& s) const {
    nlohmann::json j = nlohmann::json::object();
    for (int i = 0; i < s.num_sources(); ++i)
      j[s.source(i).spec.name] = {
          {"samples", consumed[i]},
          {"epoch", double(consumed[i]) / double(s.source(i).samples.num_samples())}};
    return j;
  }
};

// Per layer, the tokens each expert received, the assignments the capacity
// dropped and the routing hash, over the logging interval's global batches.
nlohmann::json expert_load_json(const ExpertLoad& load, const ModelConfig& mc) {
  nlohmann::json routed = nlohmann::json::array(), dropped = nlohmann::json::array();
  for (int l = 0; l < mc.num_layers; ++l) {
    const auto begin = size_t(l) * mc.num_experts, end = begin + mc.num_experts;
    routed.push_back(std::vector<int64_t>(load.routed.begin() + begin, load.routed.begin() + end));
    dropped.push_back(std::vector<int64_t>(load.dropped.begin() + begin, load.dropped.begin() + end));
  }
  return {{"routed", routed}, {"dropped", dropped}, {"hash", load.hash}};
}

// Bytes one rank holds for training (what `moetrain plan` predicts): the
// weights and the gradient accumulation buffer, padded for ZeRO-1; the
// reduce-scattered gradient shard; the AdamW moments of the shard.
struct RankMemory {
  int64_t rank, tp, pp, dp, parameters, weight_bytes, grad_bytes, optimizer_bytes;
};

std::vector<RankMemory> gather_memory(Topology& topo, const Parameters<float>& params,
                                      const AdamW<float>& optim) {
  const Coords c = topo.coords();
  const int64_t padded = int64_t(params.padded_size()), shard = int64_t(optim.shard_size());
  const RankMemory mine{topo.world_rank(), c.tp, c.pp, c.dp, int64_t(params.size()), 4 * padded,
                        4 * padded + (topo.dp_size() > 1 ? 4 * shard : 0), 8 * shard};
  std::vector<RankMemory> all(topo.world_size());
  MPI_CHECK(MPI_Gather(&mine, sizeof(RankMemory), MPI_BYTE, all.data(), sizeof(RankMemory), MPI_BYTE,
                       0, static_cast<MpiCommunicator&>(topo.world()).comm()));
  return all;
}

// What rank 0 prints before the first step: layout, model, memory, data.
void print_start_up(const TrainOptions& o, const Topology& topo, const Parameters<float>& params,
                    const std::vector<RankMemory>& memory, const data::BlendedStream& stream,
                    double start_up_s, int64_t run_samples, int threads, const Backend<float>& backend) {
  const ModelConfig& mc = o.model;
  const int64_t micro = o.micro_batch_size;
  fmt::print("{}", topo.table());
  fmt::print("model: {} layers, d={}, {} heads ({} kv), {} experts top-{}, F={}, V={}, S={}\n",
             mc.num_layers, mc.hidden_size, mc.num_heads, mc.num_query_groups, mc.num_experts,
             mc.router_topk, mc.ffn_hidden_size, mc.vocab_size, mc.seq_length);
  fmt::print("parameters: {} total, {} active per token; rank 0 holds {} ({:.3f} of one rank's)\n",
             mc.num_parameters(), mc.num_active_parameters(), params.size(),
             double(params.size()) / double(mc.num_parameters()));
  for (const RankMemory& m : memory)
    fmt::print("memory rank {} (tp {}, pp {}, dp {}): {} parameters, weights {} B, gradients {} B, "
               "optimizer {} B\n",
               m.rank, m.tp, m.pp, m.dp, m.parameters, m.weight_bytes, m.grad_bytes, m.optimizer_bytes);
  for (int s = 0; s < stream.num_sources(); ++s) {
    const auto& src = stream.source(s);
    fmt::print("data: source '{}' {} ({} tokens, {} samples of {}+1), {}\n", src.spec.name,
               src.spec.prefix, src.store.num_tokens(), src.samples.num_samples(), mc.seq_length,
               src.total == data::BlendedStream::kUnbounded
                   ? std::string("repeated as needed")
                   : fmt::format("{} epochs = {} samples", src.spec.epochs, src.total));
  }
  fmt::print("data: stream of {} samples built in {:.3f} s; this run takes {} samples\n",
             stream.size() == data::BlendedStream::kUnbounded ? std::string("unbounded")
                                                              : std::to_string(stream.size()),
             start_up_s, run_samples);
  fmt::print("backend: {} ({})\n", backend.name(), backend.library());
  fmt::print("training to {} samples: global batch {}{}, micro-batch {}, {} threads, {} backend\n",
             run_samples, o.global_batch_size,
             o.rampup.start ? fmt::format(" (ramped up from {} by {} over {} samples)",
                                          o.rampup.start, o.rampup.increment, o.rampup.samples)
                            : "",
             micro, threads, backend.name());
  std::fflush(stdout);
}

}  // namespace

TrainResult run_train(TrainOptions o) {
  resolve_and_validate(o);
  install_stop_signal_handlers();
  Topology topo(MPI_COMM_WORLD, o.topology);
  const bool root = topo.world_rank() == 0;
  const TensorParallel tp{&topo.tp(), topo.coords().tp, topo.tp_size()};
  const int stage = topo.coords().pp, stages = topo.pp_size();
  const auto layers = stage_layers(o.model.num_layers, stages, o.decoder_first_pipeline_num_layers,
                                   o.decoder_last_pipeline_num_layers);
  const StageSpan span{layers[stage].first, layers[stage].second, stage == 0, stage == stages - 1};
  const int threads = o.threads > 0 ? o.threads : default_thread_count(MPI_COMM_WORLD);
  set_thread_count(threads);

  const ModelConfig& mc = o.model;
  const data::BatchSchedule schedule(o.global_batch_size, o.micro_batch_size, topo.dp_size(), o.rampup);
  const auto start_up = std::chrono::steady_clock::now();
  data::BlendedStream stream(data::parse_sources(o.data_path, o.data_epochs), mc.seq_length, o.seed);
  for (int s = 0; s < stream.num_sources(); ++s) stream.source(s).store.check_token_range(mc.vocab_size);
  const double start_up_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_up).count();

  auto be = make_cpu_backend<float>();
  check_gemm_on_every_rank(*be, topo.world(), o.debug_corrupt_gemm_check);
  const int64_t micro = o.micro_batch_size;
  const int dp_size = topo.dp_size();
  Transformer<float> model(*be, mc, int(micro), tp, span, dp_size);
  Parameters<float>& params = model.params();
  std::vector<FlatRange> tp_partial;
  for (const ParamTensor& t : params.tensors)
    if (t.partial_grad) tp_partial.push_back({t.offset, t.offset + t.numel});
  GradSync<float> grad_sync(*be, params.padded_size(), tp_partial, tp, &topo.dp(), size_t(o.ddp_bucket_size));
  // The gradient norm sums over every group that holds other elements.
  AdamW<float> optim(*be, o.adam, shard_segments(params.tensors, grad_sync.shard(), tp.rank),
                     grad_sync.shard_size(),
                     {tp.size > 1 ? &topo.tp() : nullptr, stages > 1 ? &topo.pp() : nullptr,
                      dp_size > 1 ? &topo.dp() : nullptr});
  PipelineRunner<float> pipeline(model, PipelineGroup{&topo.pp(), stage, stages},
                                 parse_pipeline_schedule(o.pipeline_schedule));
  params.initialise(*be, o.seed);
  const nlohmann::json config = run_config_json(o);
  TrainState state;
  if (!o.load.empty()) {
    const std::string path = resolve_checkpoint(o.load, topo.world());
    CheckpointInfo info = read_checkpoint_info(path, MPI_COMM_WORLD);
    check_same_model(mc, info.config, path);
    load_checkpoint(path, MPI_COMM_WORLD, params, &optim, &grad_sync);
    state = info.state;
    if (root) {
      fmt::print("resumed from {} at iteration {} ({} samples consumed)\n", path, state.iteration,
                 state.consumed_samples);
      // The stream position means the same samples only with the same data
      // and seed; a change may be deliberate, so it is reported, not refused.
      for (const char* key : {"data_path", "data_epochs", "seed", "rampup_batch_size"})
        if (info.config.contains(key) && info.config.at(key) != config.at(key))
          fmt::print("warning: --{} differs from the checkpoint's ({} now, {} then): the run goes "
                     "on from sample {} of a different stream\n",
                     flag_name(key), config.at(key).dump(), info.config.at(key).dump(),
                     state.consumed_samples);
    }
  }

  if (o.debug_perturb_weights != 0.0) params.perturb(*be, o.debug_perturb_weights, uint64_t(state.iteration));

  // The run ends at --train-iters / --train-samples, or when the data is used up.
  const int64_t run_samples = std::min<uint64_t>(requested_samples(o), stream.size());
  const double flops_per_token = mc.train_flops_per_token();
  const std::vector<RankMemory> memory = gather_memory(topo, params, optim);
  if (root) print_start_up(o, topo, params, memory, stream, start_up_s, run_samples, threads, *be);

  std::string metrics_path = o.metrics_file;
  if (metrics_path.empty() && !o.save.empty()) {
    std::filesystem::create_directories(o.save);
    metrics_path = (std::filesystem::path(o.save) / "metrics.jsonl").string();
  }
  MetricsWriter metrics(root ? metrics_path : "");
  SourceProgress progress{stream.counts_before(uint64_t(state.consumed_samples))};

  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now();
  auto interval_start = start;
  int64_t interval_steps = 0, interval_samples = 0, interval_tokens = 0;
  double interval_loss = 0, interval_aux = 0;
  double tp_seconds_at_start = topo.tp().all_reduce_seconds;
  uint64_t tp_bytes_at_start = topo.tp().all_reduce_bytes;
  TrainResult result;
  std::vector<int32_t> batch;  // the step's micro-batches, [micro-batches][micro][S+1]
  double interval_wait = 0;     // this stage's time blocked on neighbours
  int64_t saved_iteration = -1;
  // Where the run stands beyond the iteration counters, for the checkpoint's
  // attributes: what the next step would use.
  auto resume_attributes = [&] {
    return nlohmann::json{
        {"lr_schedule", {{"consumed_samples", state.consumed_samples},
                         {"lr", learning_rate(o.lr, state.consumed_samples)},
                         {"warmup_samples", o.lr.warmup_samples},
                         {"decay_samples", o.lr.decay_samples},
                         {"decay_style", o.lr.decay_style}}},
        {"rampup", {{"consumed_samples", state.consumed_samples},
                    {"global_batch", schedule.global_batch(state.consumed_samples)}}},
        {"data", {{"consumed_samples", state.consumed_samples}, {"sources", progress.json(stream)}}},
        // No layer draws random numbers while training: the weights' init
        // and the data order are pure functions of the seed and position.
        {"rng", {{"generator", "philox4x32-10"}, {"seed", o.seed}}}};
  };
  auto save = [&] {
    if (o.save.empty() || saved_iteration == state.iteration) return;
    const SaveStats saved = save_checkpoint(o.save, topo, mc, params, optim, grad_sync, state, o.seed,
                                            config, resume_attributes(), o.keep_last);
    saved_iteration = state.iteration;
    if (root) {
      fmt::print("saved checkpoint {}/{} in {:.3f} s ({:.2f} GB/s)\n", o.save,
                 checkpoint_dir_name(state.iteration), saved.seconds, double(saved.bytes) / saved.seconds / 1e9);
      std::fflush(stdout);
    }
  };

  auto run_continues = [&] {
    if (o.train_iters > 0 && state.iteration >= o.train_iters) return false;
    return state.consumed_samples < run_samples;
  };
  while (run_continues()) {
    const int64_t global = schedule.global_batch(state.consumed_samples);
    if (uint64_t(state.consumed_samples + global) > stream.size()) {
      if (root)
        fmt::print("the data is used up: {} of {} samples consumed, too few for a batch of {} "
                   "({}); stopping\n",
                   state.consumed_samples, stream.size(), global, progress.line(stream));
      break;
    }
    const int64_t num_micro = schedule.micro_batches(state.consumed_samples);
    const int64_t tokens = global * mc.seq_length;
    const double lr = learning_rate(o.lr, state.consumed_samples);
    // aux: the mean over the global batch's micro-batches, on every replica.
    const double ce_scale = 1.0 / double(tokens), aux_scale = 1.0 / double(num_micro * dp_size);
    if (o.debug_fail_at_iteration == state.iteration + 1 && topo.world_rank() == o.debug_fail_rank)
      MT_FAIL("injected failure at iteration {} on rank {} (--debug-fail-at-iteration)",
              state.iteration + 1, o.debug_fail_rank);
    // Every stage reads the step's samples: the first embeds them, the last
    // needs the targets.
    batch.resize(size_t(num_micro) * micro * (mc.seq_length + 1));
    std::vector<const int32_t*> micro_tokens;
    for (int64_t j = 0; j < num_micro; ++j) {
      int32_t* mb = batch.data() + size_t(j) * micro * (mc.seq_length + 1);
      for (int64_t i = 0; i < micro; ++i) {
        const int64_t n = data::sample_position(state.consumed_samples, global, topo.coords().dp,
                                                topo.dp_size(), j, micro, i);
        const auto pick = stream.pick(uint64_t(n));
        stream.source(pick.source).samples.read_sample(pick.sample, mb + i * (mc.seq_length + 1));
      }
      micro_tokens.push_back(mb);
    }
    // Per-source progress counts the whole global batch, every replica's slice.
    for (int64_t n = state.consumed_samples; n < state.consumed_samples + global; ++n)
      progress.consumed[stream.pick(uint64_t(n)).source] += 1;
    be->fill(params.grads.data(), 0.0f, params.padded_size());
    PipelineStats pipeline_stats;
    float* grads = params.grads.data();
    grad_sync.start_step();
    const GradsReady ready = [&](size_t from) { grad_sync.ready_from(grads, from); };
    const MicroBatchLoss l =
        pipeline.step(micro_tokens, int(micro), ce_scale, aux_scale, &pipeline_stats, &ready);
    grad_sync.finish(grads);
    interval_wait += pipeline_stats.wait_seconds;
    double sums[2] = {l.ce_sum, l.aux};  // CE from the last stage, aux from every stage's layers
    if (stages > 1) topo.pp().all_reduce_sum(sums, 2);
    if (dp_size > 1) topo.dp().all_reduce_sum(sums, 2);
    const double loss = sums[0] / double(tokens), aux = sums[1] / double(num_micro * dp_size);
    MT_CHECK(std::isfinite(loss), "loss is {} at iteration {}", loss, state.iteration + 1);
    const double grad_norm = optim.step(params.values.data(), grad_sync.shard_grads(grads), lr);
    grad_sync.all_gather(params.values.data());
    state.iteration += 1;
    if (o.debug_perturb_weights != 0.0) params.perturb(*be, o.debug_perturb_weights, uint64_t(state.iteration));
    state.consumed_samples += global;
    state.consumed_tokens += tokens;
    result.iterations = state.iteration;
    result.last_loss = loss;
    interval_loss += loss;
    interval_aux += aux;
    interval_steps += 1;
    interval_samples += global;
    interval_tokens += tokens;

    const bool last = !run_continues();
    if (state.iteration % o.log_interval == 0 || last) {
      const auto now = Clock::now();
      const double interval_s = std::chrono::duration<double>(now - interval_start).count();
      StepMetrics m;
      m.step = state.iteration;
      m.total_steps = o.train_iters;
      m.loss = interval_loss / interval_steps;
      m.aux_loss = interval_aux / interval_steps;
      m.lr = lr;
      m.grad_norm = grad_norm;
      m.global_batch = global;
      m.global_batch_tokens = tokens;
      m.consumed_samples = state.consumed_samples;
      m.total_samples = run_samples;
      m.tokens_per_s = interval_tokens / interval_s;
      m.gflops_per_s = m.tokens_per_s * flops_per_token / 1e9;
      m.elapsed_s = std::chrono::duration<double>(now - start).count();
      m.eta_s = double(run_samples - state.consumed_samples) * interval_s / double(interval_samples);
      m.interval_s = interval_s;
      m.tp_allreduce_s = topo.tp().all_reduce_seconds - tp_seconds_at_start;
      m.tp_allreduce_bytes = double(topo.tp().all_reduce_bytes - tp_bytes_at_start);
      m.dp_exposed_s = grad_sync.stats.exposed_seconds;
      m.dp_allgather_s = grad_sync.stats.all_gather_seconds;
      m.dp_reduce_scatter_bytes = double(grad_sync.stats.reduce_scatter_bytes);
      m.dp_allgather_bytes = double(grad_sync.stats.all_gather_bytes);
      m.dp_hidden_bytes = double(grad_sync.stats.reduce_scatter_hidden_bytes);
      grad_sync.stats = {};
      tp_seconds_at_start = topo.tp().all_reduce_seconds;
      tp_bytes_at_start = topo.tp().all_reduce_bytes;
      // Each stage's idle share of the interval (the pipeline bubble).
      std::vector<double> idle(stages, 0.0);
      idle[stage] = interval_wait / interval_s;
      if (stages > 1) topo.pp().all_reduce_sum(idle.data(), idle.size());
      interval_wait = 0;
      if (root) {
        std::string idle_line;
        for (int i = 0; stages > 1 && i < stages; ++i)
          idle_line += fmt::format("{}{:.0f}%", i ? " " : " | idle per stage ", 100.0 * idle[i]);
        fmt::print("{} | {}{}\n", progress_line(m), progress.line(stream), idle_line);
        std::fflush(stdout);
      }
      nlohmann::json record = to_json(m);
      record["sources"] = progress.json(stream);
      if (mc.is_moe()) record["experts"] = expert_load_json(model.model_expert_load(&topo.world()), mc);
      model.expert_load().clear();
      if (stages > 1) record["pipeline_idle"] = idle;
      metrics.write(record);
      interval_start = now;
      interval_steps = interval_samples = interval_tokens = 0;
      interval_loss = interval_aux = 0;
    }
    if (o.save_interval > 0 && state.iteration % o.save_interval == 0) save();
    // A preemption notice on any rank stops every rank at this boundary.
    int sig = stop_signal();
    topo.world().all_reduce_max(&sig, 1);
    if (sig != 0) {
      if (root)
        fmt::print("received {}: saving at iteration {} and stopping\n", signal_name(sig), state.iteration);
      result.stopped_by_signal = true;
      break;
    }
  }
  save();
  return result;
}

}  // namespace mt
