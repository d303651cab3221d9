#include "training/training_log.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>

#include "optim/master_weights.h"

namespace mt {

namespace {

double epochs(const data::BlendedStream& s, int source, uint64_t consumed) {
  return double(consumed) / double(s.source(source).samples.num_samples());
}

// Per MoE layer (their indices in "layers"), the tokens each expert
// received, the assignments the capacity dropped, the routing hash and, with
// --moe-router-enable-expert-bias, the bias, over the logging interval's
// global batches.
nlohmann::json expert_load_json(const ExpertLoad& load, const ModelConfig& mc) {
  const size_t E = size_t(mc.num_experts);
  auto row = [E](const auto& v, int l) { return std::vector(v.begin() + l * E, v.begin() + (l + 1) * E); };
  nlohmann::json layers = nlohmann::json::array(), routed = nlohmann::json::array(),
                 dropped = nlohmann::json::array(), hash = nlohmann::json::array(), bias = nlohmann::json::array();
  for (int l = 0; l < mc.num_layers; ++l) {
    if (!mc.is_moe_layer(l)) continue;
    layers.push_back(l);
    routed.push_back(row(load.routed, l));
    dropped.push_back(row(load.dropped, l));
    hash.push_back(load.hash[size_t(l)]);
    if (!load.bias.empty()) bias.push_back(row(load.bias, l));
  }
  nlohmann::json j = {{"layers", layers}, {"routed", routed}, {"dropped", dropped}, {"hash", hash}};
  if (!load.bias.empty()) j["bias"] = bias;
  return j;
}

// The progress line's MoE part: the layer whose busiest expert is furthest
// above the mean load, every expert that received no token in the interval
// (layer.expert), and the expert bias's range.
std::string expert_load_line(const ExpertLoad& load, const ModelConfig& mc) {
  if (load.routed.empty()) return "";
  double worst = 0.0;
  int worst_layer = 0;
  std::vector<std::string> idle;
  for (int l = 0; l < mc.num_layers; ++l) {
    if (!mc.is_moe_layer(l)) continue;
    const int64_t* routed = load.routed.data() + size_t(l) * mc.num_experts;
    const int64_t total = std::accumulate(routed, routed + mc.num_experts, int64_t(0));
    const double ratio = total > 0 ? double(*std::max_element(routed, routed + mc.num_experts)) * mc.num_experts / double(total) : 0.0;
    if (ratio > worst) {
      worst = ratio;
      worst_layer = l;
    }
    for (int e = 0; e < mc.num_experts; ++e)
      if (routed[e] == 0) idle.push_back(fmt::format("{}.{}", l, e));
  }
  std::string line = fmt::format(" | experts max/mean {:.2f} (layer {})", worst, worst_layer);
  if (!idle.empty()) line += fmt::format(", no tokens: {}", fmt::join(idle, " "));
  if (!load.bias.empty()) {
    float low = INFINITY, high = -INFINITY;
    for (int l = 0; l < mc.num_layers; ++l)
      for (int e = 0; e < mc.num_experts && mc.is_moe_layer(l); ++e) {
        low = std::min(low, load.bias[size_t(l) * mc.num_experts + e]);
        high = std::max(high, load.bias[size_t(l) * mc.num_experts + e]);
      }
    line += fmt::format(", bias [{:+.4f}, {:+.4f}]", low, high);
  }
  return line;
}

}  // namespace

Straggler slowest_rank(const std::vector<double>& compute_seconds) {
  if (compute_seconds.empty()) return {};
  const auto slowest = std::max_element(compute_seconds.begin(), compute_seconds.end());
  std::vector<double> sorted = compute_seconds;
  std::sort(sorted.begin(), sorted.end());
  const size_t n = sorted.size();
  const double median = n % 2 ? sorted[n / 2] : 0.5 * (sorted[n / 2 - 1] + sorted[n / 2]);
  return {int(slowest - compute_seconds.begin()), median > 0 ? *slowest / median - 1.0 : 0.0};
}

void SourceProgress::count(const data::BlendedStream& s, int64_t begin, int64_t end) {
  for (int64_t n = begin; n < end; ++n) consumed[s.pick(uint64_t(n)).source] += 1;
}

std::string SourceProgress::line(const data::BlendedStream& s) const {
  std::string out;
  for (int i = 0; i < s.num_sources(); ++i)
    out += fmt::format("{}{} {:.2f} ep", i ? ", " : "", s.source(i).spec.name, epochs(s, i, consumed[i]));
  return out;
}

nlohmann::json SourceProgress::json(const data::BlendedStream& s) const {
  nlohmann::json j = nlohmann::json::object();
  for (int i = 0; i < s.num_sources(); ++i)
    j[s.source(i).spec.name] = {{"samples", consumed[i]}, {"epoch", epochs(s, i, consumed[i])}};
  return j;
}

template <typename T>
std::vector<RankAllocation> gather_memory(Topology& topo, const Transformer<T>& model, const AdamW<float>& optim) {
  const Parameters<T>& params = model.params();
  const Coords c = topo.coords();
  const int64_t padded = int64_t(params.padded_size()), shard = int64_t(optim.shard_size());
  const int64_t weight = sizeof(T), acc = sizeof(acc_t<T>), master = MasterWeights<T>::kSeparate ? 1 : 0;
  const bool sharded = topo.dp_cp().size > 1;
  // The accumulation buffer and the reduce-scatter's shard: float32; or in
  // T, beside one unit's float32 gradients and the shard widened to float32.
  const int64_t gradients =
      params.has_grads_in_t()
          ? weight * padded + acc * int64_t(params.grads.size()) + (sharded ? weight * shard : 0) + acc * shard
          : acc * padded + (sharded ? acc * shard : 0);
  std::vector<RankAllocation> all(topo.world_size());
  all[topo.world_rank()] = {topo.world_rank(), c.tp, c.pp, c.dp, c.cp, int64_t(params.size()), weight * padded,
                            gradients, (2 + master) * acc * shard,
                            model.activation_bytes(), model.workspace_bytes()};
  topo.world().all_gather(all.data(), sizeof(RankAllocation), DType::U8);
  return all;
}

void print_start_up(const StartUpSummary& s) {
  const TrainOptions& o = s.options;
  const ModelConfig& mc = o.model;
  fmt::print("{}", s.topo.table());
  for (const std::string& w : s.topo.node_warnings()) fmt::print("warning: {}\n", w);
  if (mc.is_moe() && mc.router_topk == 1 && mc.router_score_function == "softmax" && !mc.router_pre_softmax)
    fmt::print("warning: --moe-router-topk 1 renormalises the softmax over one expert, so every weight is 1 and "
               "the router learns from the load-balancing loss alone; Megatron refuses this without "
               "--moe-router-pre-softmax\n");
  if (o.sequence_parallel && s.topo.tp().size == 1)
    fmt::print("warning: --sequence-parallel at --tensor-model-parallel-size 1 has nothing to split; it is off\n");
  fmt::print("model: {} layers, d={}, {} heads ({} kv), {} experts top-{}, F={}, V={}, S={}\n",
             mc.num_layers, mc.hidden_size, mc.num_heads, mc.num_query_groups, mc.num_experts,
             mc.router_topk, mc.ffn_hidden_size, mc.vocab_size, mc.seq_length);
  fmt::print("parameters: {} total, {} active per token; rank 0 holds {} ({:.3f} of one rank's)\n",
             mc.num_parameters(), mc.num_active_parameters(), s.parameters,
             double(s.parameters) / double(mc.num_parameters()));
  for (const RankAllocation& m : s.memory)
    fmt::print("memory rank {} (tp {}, pp {}, dp {}{}): {} parameters, weights {} B, gradients {} B, "
               "optimizer {} B, activations {} B a micro-batch, workspace {} B\n",
               m.rank, m.tp, m.pp, m.dp, s.topo.cp().size > 1 ? fmt::format(", cp {}", m.cp) : "", m.parameters, m.weight_bytes, m.grad_bytes, m.optimizer_bytes,
               m.activation_bytes, m.workspace_bytes);
  for (int i = 0; i < s.stream.num_sources(); ++i) {
    const auto& src = s.stream.source(i);
    fmt::print("data: source '{}' {} ({} tokens, {} samples of {}+1), {}\n", src.spec.name,
               src.spec.prefix, src.store.num_tokens(), src.samples.num_samples(), mc.seq_length,
               src.total == data::BlendedStream::kUnbounded
                   ? std::string("repeated as needed")
                   : fmt::format("{} epochs = {} samples", src.spec.epochs, src.total));
  }
  fmt::print("data: stream of {} samples built in {:.3f} s; this run takes {} samples\n",
             s.stream.size() == data::BlendedStream::kUnbounded ? std::string("unbounded")
                                                                : std::to_string(s.stream.size()),
             s.stream_seconds, s.run_samples);
  fmt::print("backend: {} ({})\n", s.backend_name, s.backend_library);
  fmt::print("training to {} samples: global batch {}{}, micro-batch {}, {} threads, {} backend\n",
             s.run_samples, o.global_batch_size,
             o.rampup.start ? fmt::format(" (ramped up from {} by {} over {} samples)",
                                          o.rampup.start, o.rampup.increment, o.rampup.samples)
                            : "",
             o.micro_batch_size, s.threads, s.backend_name);
  std::fflush(stdout);
}

template <typename T>
IntervalLog<T>::IntervalLog(const TrainOptions& o, Topology& topo, GradSync<float>& grad_sync,
                         Transformer<T>& model, const data::BlendedStream& stream, int64_t run_samples,
                         const std::string& metrics_path, double peak_gflops)
    : o_(o), topo_(topo), grad_sync_(grad_sync), model_(model), stream_(stream), run_samples_(run_samples),
      metrics_(topo.world_rank() == 0 ? metrics_path : ""), peak_gflops_(peak_gflops) {
  run_start_ = Clock::now();
  restart(run_start_);
}

template <typename T>
void IntervalLog<T>::add(const StepOutcome& step) {
  steps_ += 1;
  samples_ += step.samples;
  tokens_ += step.tokens;
  if (step.skipped) {
    skipped_ += 1;
  } else {
    loss_sum_ += step.loss;
    aux_sum_ += step.aux;
    z_sum_ += step.z;
  }
  wait_seconds_ += step.wait_seconds;
  compute_seconds_ += step.seconds - step.wait_seconds - step.tp_seconds - step.dp_seconds;
  last_ = step;
}

template <typename T>
void IntervalLog<T>::report(const TrainState& state, const SourceProgress& progress, bool last,
                            std::optional<double> valid_loss) {
  if (state.iteration % o_.log_interval != 0 && !last && !valid_loss) return;
  const auto now = Clock::now();
  const StepMetrics m = metrics(state, now);
  const std::vector<double> idle = stage_idle_shares(m.interval_s);
  const ExpertLoad load = o_.model.is_moe() ? model_.model_expert_load(&topo_.world()) : ExpertLoad{};
  const std::vector<double> compute = compute_seconds_of_ranks();
  const Straggler slow = slowest_rank(compute);
  if (topo_.world_rank() == 0) {
    std::string idle_line;
    for (size_t i = 0; idle.size() > 1 && i < idle.size(); ++i)
      idle_line += fmt::format("{}{:.0f}%", i ? " " : " | idle per stage ", 100.0 * idle[i]);
    const std::string valid_line =
        valid_loss ? fmt::format(" | valid loss {:.4f} (ppl {:.2f})", *valid_loss, std::exp(*valid_loss)) : "";
    const std::string slow_line =
        compute.size() > 1 ? fmt::format(" | slowest rank {} {:+.0f}% compute", slow.rank, 100.0 * slow.over_median)
                           : "";
    fmt::print("{}{} | {}{}{}{}\n", progress_line(m), valid_line, progress.line(stream_), idle_line, slow_line,
               expert_load_line(load, o_.model));
    std::fflush(stdout);
  }
  nlohmann::json record = to_json(m);
  record["sources"] = progress.json(stream_);
  if (o_.model.is_moe()) record["experts"] = expert_load_json(load, o_.model);
  model_.expert_load().clear();
  if (idle.size() > 1) record["pipeline_idle"] = idle;
  if (valid_loss) record["valid_loss"] = *valid_loss;
  record["ranks"] = {{"compute_s", compute}, {"slowest", slow.rank}, {"slowest_over_median", slow.over_median}};
  metrics_.write(record);
  grad_sync_.stats = {};
  restart(now);
}

template <typename T>
StepMetrics IntervalLog<T>::metrics(const TrainState& state, Clock::time_point now) const {
  const double interval_s = std::chrono::duration<double>(now - start_).count();
  const GradSyncStats& dp = grad_sync_.stats;
  StepMetrics m;
  m.step = state.iteration;
  m.total_steps = o_.train_iters;
  // Over the steps that updated (NaN, written as null, when none did).
  const double updated = double(steps_ - skipped_);
  m.loss = loss_sum_ / updated;
  m.aux_loss = aux_sum_ / updated;
  m.z_loss = z_sum_ / updated;
  m.skipped_steps = skipped_;
  m.lr = last_.lr;
  m.grad_norm = last_.grad_norm;
  m.global_batch = last_.samples;
  m.global_batch_tokens = last_.tokens;
  m.consumed_samples = state.consumed_samples;
  m.total_samples = run_samples_;
  m.tokens_per_s = double(tokens_) / interval_s;
  m.gflops_per_s = m.tokens_per_s * o_.model.train_flops_per_token() / 1e9;
  m.mfu = peak_gflops_ > 0 ? m.gflops_per_s / peak_gflops_ : 0.0;
  m.elapsed_s = std::chrono::duration<double>(now - run_start_).count();
  m.eta_s = double(run_samples_ - state.consumed_samples) * interval_s / double(samples_);
  m.interval_s = interval_s;
  const TpTraffic tp = TpTraffic::of(*topo_.tp().comm) - tp_at_start_;
  m.tp_allreduce_s = tp.all_reduce_s;
  m.tp_allreduce_bytes = double(tp.all_reduce_bytes);
  m.tp_sp_s = tp.gather_scatter_s;
  m.tp_sp_bytes = double(tp.gather_scatter_bytes);
  m.dp_exposed_s = dp.exposed_seconds;
  m.dp_allgather_s = dp.all_gather_seconds;
  m.dp_reduce_scatter_bytes = double(dp.reduce_scatter_bytes);
  m.dp_allgather_bytes = double(dp.all_gather_bytes);
  m.dp_hidden_bytes = double(dp.reduce_scatter_hidden_bytes);
  m.ep_alltoall_s = model_.dispatch_stats().seconds;
  m.ep_alltoall_bytes = double(model_.dispatch_stats().bytes_sent);
  return m;
}

// Each stage's idle share of the interval (the pipeline bubble), on every
// rank; one entry without pipeline parallelism.
template <typename T>
std::vector<double> IntervalLog<T>::stage_idle_shares(double interval_s) {
  std::vector<double> idle(topo_.pp().size, 0.0);
  idle[topo_.coords().pp] = wait_seconds_ / interval_s;
  topo_.pp().all_reduce_sum(idle.data(), idle.size());
  return idle;
}

// Every rank's compute time of the interval (its steps less its waits:
// pipeline neighbours, TP all-reduces, ZeRO-1 collectives, expert
// all-to-alls), on every rank.
template <typename T>
std::vector<double> IntervalLog<T>::compute_seconds_of_ranks() {
  std::vector<double> compute(size_t(topo_.world_size()), 0.0);
  compute[size_t(topo_.world_rank())] = compute_seconds_ - model_.dispatch_stats().seconds;
  topo_.world().all_reduce_sum(compute.data(), compute.size());
  return compute;
}

template <typename T>
void IntervalLog<T>::restart(Clock::time_point now) {
  start_ = now;
  steps_ = samples_ = tokens_ = skipped_ = 0;
  loss_sum_ = aux_sum_ = z_sum_ = wait_seconds_ = compute_seconds_ = 0;
  model_.dispatch_stats() = {};
  tp_at_start_ = TpTraffic::of(*topo_.tp().comm);
}

void StepProfile::add(const StepOutcome& step) {
  steps += 1;
  seconds += step.seconds;
  tp_seconds += step.tp_seconds;
  dp_seconds += step.dp_seconds;
  wait_seconds += step.wait_seconds;
}

void print_profile(const StepProfile& p, int rank) {
  if (p.steps == 0 || p.seconds <= 0) return;
  fmt::print("profile of rank {} over {} steps ({:.3f} s a step):\n", rank, p.steps, p.seconds / double(p.steps));
  const auto row = [&](const std::string& what, double seconds, int64_t calls) {
    fmt::print("  {:<52} {:8.3f} s {:6.1f}%{}\n", what, seconds, 100.0 * seconds / p.seconds,
               calls > 0 ? fmt::format("  {} calls", calls) : "");
  };
  for (int k = 0; k < kOpKinds; ++k) row(op_kind_text(OpKind(k)), p.ops.seconds[k], p.ops.calls[k]);
  row("tensor-parallel all-reduces", p.tp_seconds, 0);
  row("data-parallel reduce-scatter wait and all-gather", p.dp_seconds, 0);
  row("pipeline waits", p.wait_seconds, 0);
  const double rest = p.seconds - p.ops.total() - p.tp_seconds - p.dp_seconds - p.wait_seconds;
  row("the rest (host routing, data, bookkeeping)", rest, 0);
  std::fflush(stdout);
}

template std::vector<RankAllocation> gather_memory<float>(Topology&, const Transformer<float>&, const AdamW<float>&);
template std::vector<RankAllocation> gather_memory<bf16>(Topology&, const Transformer<bf16>&, const AdamW<float>&);
template class IntervalLog<float>;
template class IntervalLog<bf16>;

}  // namespace mt
