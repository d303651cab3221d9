// `moetrain plan`: prints the cost model's figures (planner/plan.h) as a
// table, or as one JSON object with --json; --search ranks every layout
// that fits. Runs on one rank; nothing here touches MPI.
#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>

#include "launch/commands.h"
#include "launch/options.h"
#include "planner/plan.h"
#include "runtime/check.h"
#include "tokenizer/byte_tokenizer.h"

namespace mt {

namespace {

using nlohmann::json;

// Counts with SI prefixes (1.790 T), bytes in GB = 10^9 bytes.
std::string si(double x) {
  const char* prefix[] = {"", " K", " M", " G", " T", " P", " E"};
  int i = 0;
  while (std::abs(x) >= 1000.0 && i < 6) x /= 1000.0, ++i;
  return fmt::format("{:.{}f}{}", x, std::abs(x) >= 100 || i == 0 ? 1 : std::abs(x) >= 10 ? 2 : 3, prefix[i]);
}
std::string gb(double bytes) { return fmt::format("{:.2f} GB", bytes / 1e9); }
std::string bytes_text(double bytes) {
  if (bytes >= 1e9) return gb(bytes);
  if (bytes >= 1e6) return fmt::format("{:.2f} MB", bytes / 1e6);
  return fmt::format("{:.2f} KB", bytes / 1e3);
}
std::string percent(double x) { return fmt::format("{:.1f}%", 100.0 * x); }
std::string seconds(double s) {
  if (s >= 86400.0) return fmt::format("{:.1f} days", s / 86400.0);
  if (s >= 1.0) return fmt::format("{:.2f} s", s);
  return fmt::format("{:.2f} ms", s * 1e3);
}

std::string layout_name(const Layout& l) {
  return fmt::format("TP {} x PP {} x DP {}", l.tp, l.pp, l.dp) + (l.ep > 1 ? fmt::format(" (EP {})", l.ep) : "");
}

json held_json(const RankMemory& m, double RankMemory::Held::*field) {
  return {{"none", m.none.*field}, {"selective", m.selective.*field}, {"full", m.full.*field}};
}

json rank_json(const RankMemory& m) {
  return {{"tp", m.tp},
          {"pp", m.pp},
          {"layers", {m.layer_begin, m.layer_end}},
          {"parameters", m.parameters},
          {"expert_parameters", m.expert_parameters},
          {"padded_parameters", m.padded_parameters},
          {"shard_parameters", m.shard_parameters},
          {"expert_rows", m.expert_rows},
          {"weights_bytes", m.weights},
          {"gradients_bytes", m.gradients},
          {"optimizer_bytes", m.optimizer},
          {"live_micro_batches", m.live_micro_batches},
          {"activations_per_micro_batch_bytes", m.activations_per_micro_batch},
          {"activations_bytes", m.activations},
          {"workspace_bytes", m.workspace},
          {"activations_per_micro_batch_bytes_by_recompute", held_json(m, &RankMemory::Held::per_micro_batch)},
          {"activations_bytes_by_recompute", held_json(m, &RankMemory::Held::activations)},
          {"workspace_bytes_by_recompute", held_json(m, &RankMemory::Held::workspace)},
          {"router_state_bytes", m.router_state},
          {"total_bytes", m.total()},
          {"dp_reduce_scatter_bytes", m.dp_reduce_scatter_bytes},
          {"dp_all_gather_bytes", m.dp_all_gather_bytes},
          {"dp_sent_bytes", m.dp_sent_bytes}};
}

json gpu_json(const PlanInputs& in) {
  if (!in.gpu) return nullptr;
  const GpuSpec& g = *in.gpu;
  return {{"name", g.name},
          {"description", g.description},
          {"peak_flops_16bit", g.peak_flops_16bit},
          {"peak_flops_tf32", g.peak_flops_tf32},
          {"peak_flops_fp8", g.peak_flops_fp8},
          {"memory_bytes", g.memory_bytes},
          {"memory_bandwidth", g.memory_bandwidth},
          {"nvlink_bandwidth", g.nvlink_bandwidth},
          {"network_bandwidth", g.network_bandwidth},
          {"gpus_per_node", g.gpus_per_node}};
}

json stages_json(const PlanResult& r) {
  json stages = json::array();
  for (const StageCost& s : r.stages)
    stages.push_back({{"stage", s.stage},
                      {"layers", s.layers},
                      {"forward_flops_per_micro_batch", s.forward_flops},
                      {"compute_flops_per_micro_batch", s.compute_flops},
                      {"tp_bytes_per_micro_batch", s.tp_bytes},
                      {"tp_bytes_per_step", s.tp_step_bytes},
                      {"tp_sp_bytes_per_micro_batch", s.tp_sp_bytes},
                      {"tp_sp_bytes_per_step", s.tp_sp_step_bytes},
                      {"tp_once_bytes_per_step", s.tp_once_bytes},
                      {"tp_sent_bytes_per_micro_batch", s.tp_sent_bytes},
                      {"pp_sent_bytes_per_micro_batch", s.pp_sent_bytes},
                      {"ep_sent_bytes_per_micro_batch", s.ep_sent_bytes},
                      {"slot_s", s.slot_s},
                      {"idle_fraction", s.idle}});
  return stages;
}

json layout_json(const PlanResult& r) {
  const Layout& l = r.inputs.layout;
  return {{"tp", l.tp},
          {"pp", l.pp},
          {"dp", l.dp},
          {"ep", l.ep},
          {"sequence_parallel", l.seq_split() > 1},
          {"gradients", l.grads_in_bf16 ? "bf16" : "fp32"},
          {"micro_batch_size", l.micro_batch},
          {"micro_batches", r.micro_batches},
          {"global_batch_size", r.inputs.global_batch},
          {"batch_tokens", r.batch_tokens},
          {"pipeline_schedule", l.schedule == PipelineSchedule::GPipe ? "gpipe" : "1f1b"},
          {"recompute_granularity", to_string(l.recompute)}};
}

json parameters_json(const ParameterCounts& p) {
  return {{"total", p.total},         {"active", p.active},
          {"shared", p.shared},       {"attention", p.attention},
          {"embedding", p.embedding}, {"router", p.router},
          {"norms", p.norms},         {"dense_mlp", p.dense_mlp},
          {"shared_experts", p.shared_experts}, {"experts", p.experts},
          {"per_expert", p.per_expert}};
}

json flops_json(const FlopCounts& f) {
  return {{"forward_2n", f.forward_2n},
          {"dense_forward_2n", f.dense_forward_2n},
          {"forward", f.forward},
          {"train", f.train},
          {"train_with_recompute", f.train_with_recompute}};
}

json bytes_json(const BytesPerParameter& b) {
  return {{"weights", b.weights},
          {"gradients", b.gradients},
          {"gradient_shard", b.gradient_shard},
          {"optimizer", b.optimizer},
          {"activation", b.activation},
          {"widened_shard", b.widened_shard},
          {"unit_gradients", b.unit_gradients}};
}

json memory_json(const PlanResult& r) {
  json ranks = json::array();
  for (const RankMemory& m : r.ranks) ranks.push_back(rank_json(m));
  return {{"capacity_bytes", r.memory_capacity},
          {"fits", r.inputs.gpu ? json(r.fits) : json(nullptr)},
          {"largest", rank_json(r.ranks[size_t(r.largest_rank)])},
          {"ranks", ranks}};
}

json communication_json(const Communication& c) {
  return {{"tp_bytes", c.tp_bytes}, {"tp_sp_bytes", c.tp_sp_bytes}, {"tp_sent_bytes", c.tp_sent_bytes},
          {"pp_sent_bytes", c.pp_sent_bytes},
          {"dp_sent_bytes", c.dp_sent_bytes}, {"ep_sent_bytes", c.ep_sent_bytes}, {"tp_link", c.tp_link},
          {"pp_link", c.pp_link}, {"dp_link", c.dp_link}, {"ep_link", c.ep_link}, {"tp_s", c.tp_s},
          {"pp_s", c.pp_s}, {"dp_s", c.dp_s}, {"ep_s", c.ep_s}};
}

json time_json(const PlanResult& r) {
  if (!r.timing) return nullptr;
  const Timing& t = *r.timing;
  return {{"step_s", t.step_s},
          {"pipeline_s", t.pipeline_s},
          {"compute_s", t.compute_s},
          {"dp_s", t.dp_s},
          {"estimated_step_s", t.estimated_step_s},
          {"estimated_mfu", t.estimated_mfu},
          {"mfu", t.mfu},
          {"mfu_assumed", t.mfu_assumed},
          {"tokens_per_s", t.tokens_per_s},
          {"train_tokens", r.inputs.train_tokens},
          {"train_days", t.train_s / 86400.0},
          {"gpu_hours", t.gpu_hours},
          {"cost", t.cost}};
}

json serve_json(const PlanResult& r) {
  const Serving& s = r.serving;
  const bool gpu = r.inputs.gpu.has_value();
  return {{"weights_bytes_fp16", s.weights_fp16},
          {"weights_bytes_fp8", s.weights_fp8},
          {"kv_bytes_per_sequence", s.kv_per_sequence},
          {"kv_bytes_per_sequence_mha", s.kv_per_sequence_mha},
          {"kv_bytes_per_sequence_per_gpu", s.kv_per_sequence_per_gpu},
          {"kv_bytes_per_sequence_per_gpu_mha", s.kv_per_sequence_per_gpu_mha},
          {"sequences_per_gpu", gpu ? json(s.sequences_per_gpu) : json(nullptr)},
          {"tokens_per_s_fp16", gpu ? json(s.tokens_per_s_fp16) : json(nullptr)},
          {"tokens_per_s_fp8", gpu ? json(s.tokens_per_s_fp8) : json(nullptr)}};
}

json plan_json(const PlanResult& r, bool serve) {
  const PlanInputs& in = r.inputs;
  json j = {{"model", model_config_to_json(in.model)},
            {"cluster", {{"num_gpus", in.num_gpus()}, {"gpu", gpu_json(in)}, {"precision", to_string(in.precision)}}},
            {"layout", layout_json(r)},
            {"parameters", parameters_json(r.params)},
            {"flops_per_token", flops_json(r.flops)},
            {"tokens_per_expert_per_step", r.tokens_per_expert},
            {"bytes_per_parameter", bytes_json(r.bytes)},
            {"memory", memory_json(r)},
            {"pipeline", {{"bubble_fraction", r.bubble_fraction}, {"stages", stages_json(r)}}},
            {"communication", communication_json(r.comm)},
            {"time", time_json(r)}};
  if (serve) j["serve"] = serve_json(r);
  return j;
}

// The model's shape in a line: its layers by kind, attention, MLPs.
std::string model_text(const ModelConfig& c) {
  const int moe = c.num_moe_layers(), dense = c.num_layers - moe;
  std::string layers = fmt::format("{} layers", c.num_layers);
  if (moe > 0 && dense > 0) layers += fmt::format(" ({} MoE, {} dense)", moe, dense);
  std::string text = fmt::format("{}, d={}, {} heads of {} ({} kv head{}{}){}", layers, c.hidden_size, c.num_heads,
                                 c.head_dim(), c.num_query_groups, c.num_query_groups == 1 ? "" : "s",
                                 c.num_query_groups == 1 ? ": multi-query" : "", c.qk_layernorm ? ", qk-norm" : "");
  const char* mlp = c.swiglu ? "SwiGLU" : "GELU";
  if (moe > 0) {
    text += fmt::format(", {} experts top-{} of F={} ({})", c.num_experts, c.router_topk, c.expert_ffn(), mlp);
    if (c.shared_expert_size > 0)
      text += fmt::format(", shared expert F={}{}", c.shared_expert_size, c.shared_expert_gate ? " gated" : "");
  }
  if (dense > 0) text += fmt::format(", dense MLP F={} ({})", c.ffn_hidden_size, mlp);
  return text;
}

void print_header(const PlanResult& r) {
  const PlanInputs& in = r.inputs;
  const ModelConfig& c = in.model;
  const Layout& l = in.layout;
  fmt::print("moetrain plan  (GB = 10^9 bytes; K, M, G, T = 10^3, 10^6, 10^9, 10^12)\n\n");
  fmt::print("model    {}, V={}, S={}\n", model_text(c), c.vocab_size, c.seq_length);
  if (in.gpu) {
    const GpuSpec& g = *in.gpu;
    fmt::print("cluster  {} x {} ({}: {} TFLOP/s {}, {} at {:.0f} GB/s; NVLink {:.0f} GB/s, network {:.0f} GB/s "
               "a GPU), {} precision\n",
               in.num_gpus(), g.name, g.description,
               (in.precision == Precision::BF16 ? g.peak_flops_16bit : g.peak_flops_tf32) / 1e12,
               in.precision == Precision::BF16 ? "bf16" : "tf32", gb(g.memory_bytes), g.memory_bandwidth / 1e9,
               g.nvlink_bandwidth / 1e9, g.network_bandwidth / 1e9, to_string(in.precision));
  } else {
    fmt::print("cluster  {} ranks, no --gpu (counts and bytes only), {} precision\n", in.num_gpus(),
               to_string(in.precision));
  }
  std::string split;
  for (const StageCost& s : r.stages) split += fmt::format("{}{}", split.empty() ? "" : " ", s.layers);
  fmt::print("layout   {} = {} GPUs{}; layers a stage: {}\n", layout_name(l), in.num_gpus(),
             std::string(l.seq_split() > 1 ? ", sequence parallel (the residual stream's rows split over TP)" : "") +
                 (l.grads_in_bf16 ? ", gradients in bf16" : ""),
             split);
  fmt::print("batch    {} samples = {} tokens a step; micro-batch {}, {} micro-batches a replica; {}; "
             "recompute {}\n\n",
             in.global_batch, si(double(r.batch_tokens)), l.micro_batch, r.micro_batches,
             l.schedule == PipelineSchedule::GPipe ? "gpipe" : "1f1b", to_string(l.recompute));

  const ParameterCounts& p = r.params;
  fmt::print("parameters\n");
  fmt::print("  {:<52}{:>12}\n", "total", si(double(p.total)));
  fmt::print("  {:<52}{:>12}\n",
             fmt::format("active per token (shared + {} of {} experts)", c.router_topk, c.num_experts),
             si(double(p.active)));
  fmt::print("  {:<52}{:>12}\n", "shared (everything but the routed experts)", si(double(p.shared)));
  fmt::print("  {:<52}{:>12}\n", "  attention (wq, wk, wv, wo)", si(double(p.attention)));
  fmt::print("  {:<52}{:>12}\n", "  embedding + LM head", si(double(p.embedding)));
  fmt::print("  {:<52}{:>12}\n", "  routers + norms", si(double(p.router + p.norms)));
  // The MLPs' lines: a dense model's MLPs, or an MoE model's dense layers,
  // shared experts and routed experts, each where there are any.
  const std::string mlp_tensors = c.swiglu ? "w1, w3, w2" : "w1, w2";
  const int moe_layers = c.num_moe_layers(), dense_layers = c.num_layers - moe_layers;
  auto layers = [](int n, const char* kind) { return fmt::format("{} {} layer{}", n, kind, n == 1 ? "" : "s"); };
  auto row = [](const std::string& name, int64_t count) { fmt::print("  {:<52}{:>12}\n", name, si(double(count))); };
  if (p.dense_mlp > 0)
    row(fmt::format("  dense MLPs ({} in {})", mlp_tensors, layers(dense_layers, "dense")), p.dense_mlp);
  if (p.shared_experts > 0)
    row(fmt::format("  shared experts ({}{})", mlp_tensors, c.shared_expert_gate ? ", gate" : ""), p.shared_experts);
  if (p.experts > 0)
    row(fmt::format("per routed expert ({} in {})", mlp_tensors, layers(moe_layers, "MoE")), p.per_expert);
  fmt::print("  {:<52}{:>12}\n", "tokens per expert per step (batch x K / E)", si(r.tokens_per_expert));
  fmt::print("\nFLOPs per token\n");
  fmt::print("  {:<52}{:>12}\n", "forward, 2 x active", si(r.flops.forward_2n));
  fmt::print("  {:<52}{:>12}\n", "  a dense model of the same total: 2 x total", si(r.flops.dense_forward_2n));
  fmt::print("  {:<52}{:>12}\n", "forward, products + attention scores (4 S H hd L)", si(r.flops.forward));
  fmt::print("  {:<52}{:>12}\n", "training (3 x forward; MFU counts these)", si(r.flops.train));
  fmt::print("  {:<52}{:>12}\n", fmt::format("training as run (recompute {})", to_string(l.recompute)),
             si(r.flops.train_with_recompute));
}

void print_memory(const PlanResult& r) {
  const PlanInputs& in = r.inputs;
  const Layout& l = in.layout;
  const RankMemory& big = r.ranks[size_t(r.largest_rank)];
  fmt::print("\nmemory per GPU, bytes a parameter: weights {}, gradients {} (+ {} / DP shard{}), optimizer {} / DP{}; "
             "activations {} B an element\n",
             r.bytes.weights, r.bytes.gradients, r.bytes.gradient_shard,
             l.grads_in_bf16 ? fmt::format(", + {} / DP widened, + {} a layer's element", r.bytes.widened_shard,
                                           r.bytes.unit_gradients)
                             : "",
             r.bytes.optimizer,
             l.ep > 1 ? fmt::format(" (experts: E/{} of them a GPU, shards / {})", l.ep, l.dp / l.ep) : "",
             r.bytes.activation);
  fmt::print("  {:<18}{:>12}{:>12}{:>12}{:>12}{:>13}{:>12}{:>12}\n", "stage (layers)", "params", "weights",
             "gradients", "optimizer", "activations", "workspace", "total");
  // One row per run of stages with the same figures (their largest TP rank).
  std::vector<RankMemory> per_stage;
  for (const RankMemory& m : r.ranks) {
    if (per_stage.empty() || per_stage.back().pp != m.pp) per_stage.push_back(m);
    else if (m.total() > per_stage.back().total()) per_stage.back() = m;
  }
  auto same = [](const RankMemory& a, const RankMemory& b) {
    return a.parameters == b.parameters && a.activations == b.activations && a.workspace == b.workspace &&
           a.layer_end - a.layer_begin == b.layer_end - b.layer_begin;
  };
  std::vector<std::string> rows;
  for (size_t i = 0; i < per_stage.size();) {
    size_t j = i;
    while (j + 1 < per_stage.size() && same(per_stage[j + 1], per_stage[i])) ++j;
    const RankMemory& m = per_stage[i];
    const std::string stages = i == j ? fmt::format("{}", m.pp) : fmt::format("{}-{}", m.pp, per_stage[j].pp);
    const std::string name = fmt::format("{} ({})", stages, m.layer_end - m.layer_begin);
    rows.push_back(fmt::format("  {:<18}{:>12}{:>12}{:>12}{:>12}{:>13}{:>12}{:>12}\n", name,
                               si(double(m.parameters)), bytes_text(m.weights), bytes_text(m.gradients),
                               bytes_text(m.optimizer), bytes_text(m.activations), bytes_text(m.workspace),
                               bytes_text(m.total())));
    i = j + 1;
  }
  // Long pipelines: the first stages (the most micro-batches alive) and the last.
  for (size_t i = 0; i < rows.size(); ++i) {
    if (rows.size() > 16 && i == 8) fmt::print("  ... {} more stages (all in --json)\n", rows.size() - 12);
    if (rows.size() <= 16 || i < 8 || i >= rows.size() - 4) fmt::print("{}", rows[i]);
  }
  const double model_state = big.total() - big.activations - big.workspace;
  fmt::print("  largest: TP rank {} of stage {}: {} with recompute {} (none {}, selective {}, full {}), {} "
             "micro-batches alive of {} each{}\n",
             big.tp, big.pp, bytes_text(big.total()), to_string(l.recompute),
             bytes_text(model_state + big.none.total()), bytes_text(model_state + big.selective.total()),
             bytes_text(model_state + big.full.total()), big.live_micro_batches,
             bytes_text(big.activations_per_micro_batch),
             l.seq_split() > 1 ? fmt::format(" (sequence parallel: the residual stream's rows split {} ways)", l.tp)
                               : "");
  if (in.gpu)
    fmt::print("  {} in {} of {}\n", r.fits ? "fits" : "DOES NOT FIT", bytes_text(r.memory_capacity), in.gpu->name);

}

void print_pipeline_and_communication(const PlanResult& r) {
  const PlanInputs& in = r.inputs;
  const Layout& l = in.layout;
  const double ideal = double(l.pp - 1) / double(r.micro_batches + l.pp - 1);
  fmt::print("\npipeline bubble  {} of the step (equal stages: (PP-1)/(m+PP-1) = {})\n", percent(r.bubble_fraction),
             percent(ideal));
  fmt::print("\ncommunication per step, one GPU\n");
  const std::string tp_sent = fmt::format(
      "{} sent{}", bytes_text(r.comm.tp_sent_bytes),
      in.gpu && l.tp > 1 ? fmt::format(" over {}, {}", r.comm.tp_link, seconds(r.comm.tp_s)) : "");
  if (l.seq_split() > 1) {
    fmt::print("  TP all-reduces   {} payload (routing, cross-entropy, partial gradients)\n",
               bytes_text(r.comm.tp_bytes));
    fmt::print("  TP SP            {} payload (sequence parallelism's reduce-scatters and all-gathers)\n",
               bytes_text(r.comm.tp_sp_bytes));
    fmt::print("  TP in all        {}\n", tp_sent);
  } else {
    fmt::print("  TP all-reduces   {} payload, {}\n", bytes_text(r.comm.tp_bytes), tp_sent);
  }
  fmt::print("  PP send/receive  {} sent{}\n", bytes_text(r.comm.pp_sent_bytes),
             in.gpu && l.pp > 1 ? fmt::format(" over {}, {}", r.comm.pp_link, seconds(r.comm.pp_s)) : "");
  fmt::print("  DP ZeRO-1        {} sent (reduce-scatter + all-gather{}){}\n", bytes_text(r.comm.dp_sent_bytes),
             l.ep > 1 ? "; the experts over expert-DP" : "",
             in.gpu && l.dp > 1 ? fmt::format(" over {}, {}", r.comm.dp_link, seconds(r.comm.dp_s)) : "");
  if (l.ep > 1)
    fmt::print("  EP all-to-all    {} sent (expert rows out and back, balanced routing){}\n",
               bytes_text(r.comm.ep_sent_bytes),
               in.gpu ? fmt::format(" over {}, {}", r.comm.ep_link, seconds(r.comm.ep_s)) : "");
}

void print_time(const PlanResult& r) {
  const PlanInputs& in = r.inputs;
  if (!r.timing) return;
  const Timing& t = *r.timing;
  fmt::print("\ntime (products at {} of peak)\n", percent(in.compute_efficiency));
  fmt::print("  step             {}{}\n", seconds(t.step_s),
             t.mfu_assumed ? fmt::format(" at the assumed MFU (the cost model: {})", seconds(t.estimated_step_s))
                           : fmt::format(": pipeline {} (products of the busiest stage {}), DP {}",
                                         seconds(t.pipeline_s), seconds(t.compute_s), seconds(t.dp_s)));
  fmt::print("  tokens/s         {}\n", si(t.tokens_per_s));
  fmt::print("  MFU              {:.3f}{}\n", t.mfu,
             t.mfu_assumed ? fmt::format(" (assumed, --mfu; the cost model estimates {:.3f})", t.estimated_mfu)
                           : " (estimated)");
  if (in.train_tokens > 0)
    fmt::print("  {:<17}{:.1f} days, {} GPU-hours{}\n", si(in.train_tokens) + " tokens", t.train_s / 86400.0,
               si(t.gpu_hours),
               in.gpu_hour_cost > 0 ? fmt::format(", cost {} at {:g} a GPU-hour", si(t.cost), in.gpu_hour_cost) : "");
}

void print_training(const PlanResult& r) {
  print_memory(r);
  print_pipeline_and_communication(r);
  print_time(r);
}

void print_serving(const PlanResult& r) {
  const PlanInputs& in = r.inputs;
  const ModelConfig& c = in.model;
  const Serving& s = r.serving;
  fmt::print("\nserving, one sequence at a time, context S={}\n", c.seq_length);
  fmt::print("  weights per GPU (largest)        fp16 {}, fp8 {}{}\n", gb(s.weights_fp16), gb(s.weights_fp8),
             in.gpu ? fmt::format(" of {}", gb(in.gpu->memory_bytes)) : "");
  fmt::print("  KV cache per sequence (fp16)     {} with {} kv head{}; {} with full multi-head attention ({} kv "
             "heads, {:.0f}x)\n",
             bytes_text(s.kv_per_sequence), c.num_query_groups, c.num_query_groups == 1 ? "" : "s",
             bytes_text(s.kv_per_sequence_mha), c.num_heads, s.kv_per_sequence_mha / s.kv_per_sequence);
  fmt::print("  KV cache per sequence per GPU    {}; multi-head {}\n", bytes_text(s.kv_per_sequence_per_gpu),
             bytes_text(s.kv_per_sequence_per_gpu_mha));
  if (!in.gpu) return;
  fmt::print("  sequences a GPU holds (fp16)     {}\n", s.sequences_per_gpu);
  fmt::print("  memory-bandwidth bound           {:.1f} tokens/s a sequence at fp16, {:.1f} at fp8\n",
             s.tokens_per_s_fp16, s.tokens_per_s_fp8);
}

void print_search(const PlanInputs& base, const SearchResult& s, int max_tp) {
  fmt::print("search: {} GPUs of {}, TP up to {}, {} precision; {} layouts fit, {} dropped\n", base.num_gpus(),
             base.gpu->name, max_tp, to_string(base.precision), s.kept.size(), s.dropped.size());
  fmt::print("  (SP: sequence parallelism, tried on and off at TP > 1; the faster that fits is kept.\n"
             "   grads: fp32, or bf16 under bf16 precision where fp32 gradients do not fit)\n");
  fmt::print("\n  {:>4}{:>5}{:>7}{:>5}{:>4}{:>6}{:>6}  {:<10}{:>12}{:>12}{:>9}{:>8}{:>12}\n", "TP", "PP", "DP", "EP",
             "SP", "grads", "mbs", "recompute", "memory", "tokens/s", "MFU", "bubble", "step");
  for (const SearchCandidate& c : s.kept)
    fmt::print("  {:>4}{:>5}{:>7}{:>5}{:>4}{:>6}{:>6}  {:<10}{:>12}{:>12}{:>9.3f}{:>8}{:>12}\n", c.layout.tp,
               c.layout.pp, c.layout.dp, c.layout.ep, c.layout.seq_split() > 1 ? "on" : c.layout.tp > 1 ? "off" : "-",
               c.layout.grads_in_bf16 ? "bf16" : "fp32", c.layout.micro_batch, to_string(c.layout.recompute),
               gb(c.memory), si(c.tokens_per_s), c.mfu, percent(c.bubble), seconds(c.step_s));
  fmt::print("\ndropped:\n");
  // Structural reasons once each, with the layouts they hit; memory per
  // (TP, PP, EP), with the smallest of its micro-batch and recompute choices.
  std::vector<std::pair<std::string, std::string>> reasons;  // reason, layouts
  for (const SearchCandidate& c : s.dropped) {
    if (c.drop == Drop::Memory) continue;
    const std::string where = c.drop == Drop::TensorParallel ? fmt::format("TP {}", c.layout.tp)
                              : c.drop == Drop::BatchSplit && c.layout.micro_batch > 1
                                  ? fmt::format("{} mbs {}", layout_name(c.layout), c.layout.micro_batch)
                                  : layout_name(c.layout);
    auto it = std::find_if(reasons.begin(), reasons.end(), [&](const auto& r) { return r.first == c.dropped; });
    if (it == reasons.end()) reasons.push_back({c.dropped, where});
    else it->second += "; " + where;
  }
  for (const auto& [reason, where] : reasons) fmt::print("  {}\n      {}\n", reason, where);
  for (size_t i = 0; i < s.dropped.size();) {
    const SearchCandidate& c = s.dropped[i];
    size_t j = i;
    if (c.drop != Drop::Memory) {
      ++i;
      continue;
    }
    const SearchCandidate* best = &c;
    while (j + 1 < s.dropped.size() && s.dropped[j + 1].drop == Drop::Memory &&
           s.dropped[j + 1].layout.tp == c.layout.tp && s.dropped[j + 1].layout.pp == c.layout.pp &&
           s.dropped[j + 1].layout.ep == c.layout.ep) {
      ++j;
      if (s.dropped[j].memory < best->memory) best = &s.dropped[j];
    }
    fmt::print("  {}: {} micro-batch/recompute choice{} too large; the smallest (micro-batch {}, recompute {}) {}\n",
               layout_name(c.layout), j - i + 1, j > i ? "s" : "", best->layout.micro_batch,
               to_string(best->layout.recompute), best->dropped);
    i = j + 1;
  }
}

json search_json(const PlanInputs& base, const SearchResult& s) {
  auto candidate = [](const SearchCandidate& c) {
    json j = {{"tp", c.layout.tp},
              {"pp", c.layout.pp},
              {"dp", c.layout.dp},
              {"ep", c.layout.ep},
              {"sequence_parallel", c.layout.seq_split() > 1},
              {"gradients", c.layout.grads_in_bf16 ? "bf16" : "fp32"},
              {"micro_batch_size", c.layout.micro_batch},
              {"recompute_granularity", to_string(c.layout.recompute)}};
    if (c.memory > 0) {
      j["memory_bytes"] = c.memory;
      j["step_s"] = c.step_s;
      j["tokens_per_s"] = c.tokens_per_s;
      j["mfu"] = c.mfu;
      j["bubble_fraction"] = c.bubble;
    }
    if (!c.dropped.empty()) j["dropped"] = c.dropped;
    return j;
  };
  json kept = json::array(), dropped = json::array();
  for (const SearchCandidate& c : s.kept) kept.push_back(candidate(c));
  for (const SearchCandidate& c : s.dropped) dropped.push_back(candidate(c));
  return {{"model", model_config_to_json(base.model)},
          {"cluster",
           {{"num_gpus", base.num_gpus()}, {"gpu", gpu_json(base)}, {"precision", to_string(base.precision)}}},
          {"global_batch_size", base.global_batch},
          {"kept", kept},
          {"dropped", dropped}};
}

}  // namespace

PlanInputs resolve_plan_inputs(const PlanOptions& o) {
  TrainOptions t = o.train;
  resolve_model_and_batch(t, ByteTokenizer());  // --vocab-size gives the vocabulary; no files are read
  PlanInputs in;
  in.model = t.model;
  in.rampup = t.rampup;
  in.global_batch = t.global_batch_size;

  Layout& l = in.layout;
  MT_CHECK(t.topology.context_parallel == 1,
           "--context-parallel-size {}: the planner does not model context parallelism yet", t.topology.context_parallel);
  l.tp = t.topology.tensor_parallel;
  l.ep = t.topology.expert_parallel;
  l.pp = t.topology.pipeline_parallel;
  l.first_stage_layers = t.decoder_first_pipeline_num_layers;
  l.last_stage_layers = t.decoder_last_pipeline_num_layers;
  l.micro_batch = t.micro_batch_size;
  l.schedule = t.schedule;
  l.recompute = t.recompute.granularity;
  l.recompute_method = t.recompute.method;
  l.recompute_num_layers = t.recompute.num_layers;
  l.sequence_parallel = t.sequence_parallel;
  MT_CHECK(o.num_gpus >= 0, "--num-gpus must be >= 0, got {}", o.num_gpus);
  if (o.search) {
    MT_CHECK(o.num_gpus > 0, "--search needs --num-gpus (the GPUs to lay the model out on)");
    MT_CHECK(!o.gpu.empty(), "--search needs --gpu (the memory a layout must fit in)");
    MT_CHECK(o.search_max_tp >= 0, "--search-max-tp must be >= 0, got {}", o.search_max_tp);
    MT_CHECK(o.search_max_micro_batch_size >= 1, "--search-max-micro-batch-size must be >= 1, got {}",
             o.search_max_micro_batch_size);
    l = Layout{1, 1, o.num_gpus, 1, 0, 0, 1, Recompute::None, RecomputeMethod::Uniform, 1, l.schedule};
  } else {
    MT_CHECK(l.tp >= 1, "--tensor-model-parallel-size must be >= 1, got {}", l.tp);
    MT_CHECK(l.pp >= 1, "--pipeline-model-parallel-size must be >= 1, got {}", l.pp);
    const int replica = l.tp * l.pp;
    const int gpus = o.num_gpus > 0 ? o.num_gpus : replica;
    MT_CHECK(gpus % replica == 0,
             "--num-gpus {} is not divisible by --tensor-model-parallel-size {} x "
             "--pipeline-model-parallel-size {}",
             gpus, l.tp, l.pp);
    l.dp = gpus / replica;
    MT_CHECK(l.ep >= 1 && l.dp % l.ep == 0 && in.model.num_experts % l.ep == 0,
             "--expert-model-parallel-size {} must divide the data-parallel size {} and --num-experts {}", l.ep,
             l.dp, in.model.num_experts);
    tp_shape(in.model, 0, l.tp);
    check_layout(t, l.dp);
  }

  if (!o.gpu.empty()) in.gpu = find_gpu(o.gpu);
  const std::string precision = o.precision.empty() ? (in.gpu || o.train.bf16 ? "bf16" : "fp32") : o.precision;
  MT_CHECK(precision == "fp32" || precision == "bf16", "--precision must be fp32 or bf16, got '{}'", precision);
  MT_CHECK(!o.train.bf16 || precision == "bf16", "--bf16 trains in bf16, but --precision is {}", precision);
  in.precision = precision == "bf16" ? Precision::BF16 : Precision::FP32;
  MT_CHECK(!o.train.grad_reduce_in_bf16 || in.precision == Precision::BF16,
           "--grad-reduce-in-bf16 keeps the gradients in bf16, which needs --bf16 (or --precision bf16)");
  in.layout.grads_in_bf16 = o.train.grad_reduce_in_bf16;
  MT_CHECK(o.compute_efficiency > 0 && o.compute_efficiency <= 1,
           "--compute-efficiency must be in (0, 1], got {}", o.compute_efficiency);
  MT_CHECK(o.mfu >= 0 && o.mfu <= 1, "--mfu must be in [0, 1] (0: estimate it), got {}", o.mfu);
  MT_CHECK(o.gpu_hour_cost >= 0, "--gpu-hour-cost must be >= 0, got {}", o.gpu_hour_cost);
  MT_CHECK(o.train_tokens >= 0, "--train-tokens must be >= 0, got {}", o.train_tokens);
  in.compute_efficiency = o.compute_efficiency;
  in.mfu = o.mfu;
  in.gpu_hour_cost = o.gpu_hour_cost;
  in.train_tokens = o.train_tokens;
  return in;
}

void run_plan(const PlanOptions& options) {
  const PlanInputs in = resolve_plan_inputs(options);
  if (options.search) {
    const int max_tp = options.search_max_tp > 0 ? options.search_max_tp : in.gpu->gpus_per_node;
    const SearchResult s = search_layouts(in, max_tp, options.search_max_micro_batch_size);
    if (options.json) fmt::print("{}\n", search_json(in, s).dump());
    else print_search(in, s, max_tp);
    return;
  }
  const PlanResult r = make_plan(in);
  if (options.json) {
    fmt::print("{}\n", plan_json(r, options.serve).dump());
    return;
  }
  print_header(r);
  if (options.serve) print_serving(r);
  else print_training(r);
}

}  // namespace mt
