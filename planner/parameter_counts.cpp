#include "planner/cost_model.h"

#include <algorithm>

#include "runtime/check.h"

namespace mt {

std::vector<StageSpan> stage_spans(const ModelConfig& c, const Layout& l) {
  std::vector<StageSpan> spans;
  for (int s = 0; s < l.pp; ++s)
    spans.push_back(stage_span(c.num_layers, s, l.pp, l.first_stage_layers, l.last_stage_layers));
  return spans;
}

StageMlps stage_mlps(const ModelConfig& c, const StageSpan& span) {
  StageMlps m;
  for (int l = span.begin; l < span.end_of(c); ++l) ++(c.is_moe_layer(l) ? m.moe_layers : m.dense_layers);
  return m;
}

std::vector<RankCounts> rank_counts(const ModelConfig& c, int tp, const std::vector<StageSpan>& spans, int ep) {
  const int pp = int(spans.size());
  std::vector<RankCounts> counts(size_t(pp) * tp);
  // A token's rows pass through K routed experts' weights; the rank holds
  // E/EP. Everything else (a dense layer's MLP, the shared expert, the
  // router) every token passes through whole.
  const double routed_share = double(c.router_topk) * ep / double(c.num_experts);
  for (int t = 0; t < tp; ++t) {
    // The table as a sequence-parallel Transformer marks it: the same
    // tensors, every norm gain's gradient partial over TP too.
    std::vector<ParamTensor> table = param_table(c, t, tp, {}, 0, ep), sp_table = table;
    mark_sequence_parallel_grads(sp_table);
    std::string unit;  // the current GradUnit, whose tensors are consecutive
    int64_t unit_elements = 0;
    for (size_t i = 0; i < table.size(); ++i) {
      const ParamTensor& p = table[i];
      int stage = 0;
      while (stage < pp && !spans[stage].holds(p.name, c)) ++stage;
      MT_CHECK(stage < pp, "no pipeline stage holds tensor {}", p.name);
      RankCounts& rc = counts[size_t(stage) * tp + t];
      rc.parameters += int64_t(p.numel);
      if (p.is_expert) rc.expert_parameters += int64_t(p.numel);
      const double share = p.is_expert ? routed_share : 1.0;
      if (p.name != "embed") rc.active_weights += double(p.numel) * share;
      if (p.partial_grad) rc.partial_grad += int64_t(p.numel);
      if (sp_table[i].partial_grad) rc.sp_partial_grad += int64_t(p.numel);
      if (grad_unit_of(p.name) != unit) {
        unit = grad_unit_of(p.name);
        unit_elements = 0;
      }
      unit_elements += int64_t(p.numel);
      rc.largest_grad_unit = std::max(rc.largest_grad_unit, unit_elements);
    }
  }
  return counts;
}

namespace {
bool contains(const std::string& name, const char* part) { return name.find(part) != std::string::npos; }
}  // namespace

ParameterCounts count_parameters(const ModelConfig& c) {
  ParameterCounts p;
  for (const ParamTensor& t : param_table(c)) {
    const int64_t n = int64_t(t.numel);
    const std::string& name = t.name;
    p.total += n;
    // The table marks the routed experts (split over EP); the rest by name:
    // a dense layer's MLP is "mlp/", the shared expert and its gate
    // "shared_expert/", and every token passes through both.
    if (name == "embed" || name == "lm_head") p.embedding += n;
    else if (t.is_expert) p.experts += n;
    else if (t.is_norm) p.norms += n;  // attn_norm, mlp_norm, q_norm, k_norm, final_norm
    else if (contains(name, "/mlp/")) p.dense_mlp += n;
    else if (contains(name, "/shared_expert/")) p.shared_experts += n;
    else if (name.ends_with("/router")) p.router += n;
    else p.attention += n;  // wq, wk, wv, wo
  }
  p.per_expert = p.experts / c.num_experts;
  p.shared = p.total - p.experts;
  p.active = p.shared + int64_t(c.router_topk) * p.per_expert;
  // The model's own counts (model/config.cpp) must agree with its table.
  MT_CHECK(p.total == c.num_parameters() && p.active == c.num_active_parameters(),
           "parameter table ({} total, {} active) disagrees with ModelConfig ({}, {})", p.total, p.active,
           c.num_parameters(), c.num_active_parameters());
  return p;
}

FlopCounts count_flops(const ModelConfig& c, const ParameterCounts& params, Recompute recompute) {
  FlopCounts f;
  f.forward_2n = 2.0 * double(params.active);
  f.dense_forward_2n = 2.0 * double(params.total);
  f.train = c.train_flops_per_token();
  f.forward = f.train / 3.0;
  // QK^T and PV over the H heads of hd (--kv-channels may make H hd differ from d).
  const double attention_flops = 4.0 * c.seq_length * double(c.num_heads) * c.head_dim() * c.num_layers;
  f.train_with_recompute = f.train + (recompute == Recompute::Full        ? f.forward
                                      : recompute == Recompute::Selective ? attention_flops
                                                                          : 0.0);
  return f;
}

}  // namespace mt
