#include "planner/cost_model.h"

#include "runtime/check.h"

namespace mt {

std::vector<StageSpan> stage_spans(const ModelConfig& c, const Layout& l) {
  std::vector<StageSpan> spans;
  for (int s = 0; s < l.pp; ++s)
    spans.push_back(stage_span(c.num_layers, s, l.pp, l.first_stage_layers, l.last_stage_layers));
  return spans;
}

bool is_expert_tensor(const std::string& name) {
  return name.find("/experts/") != std::string::npos || name.find("/mlp/") != std::string::npos;
}

std::vector<RankCounts> rank_counts(const ModelConfig& c, int tp, const std::vector<StageSpan>& spans, int ep) {
  const int pp = int(spans.size());
  std::vector<RankCounts> counts(size_t(pp) * tp);
  // A token's rows pass through K experts' weights; the rank holds E/EP.
  const double routed_share = double(c.router_topk) * ep / double(c.num_experts);
  for (int t = 0; t < tp; ++t) {
    for (const ParamTensor& p : param_table(c, t, tp, {}, 0, ep)) {
      int stage = 0;
      while (stage < pp && !spans[stage].holds(p.name, c)) ++stage;
      MT_CHECK(stage < pp, "no pipeline stage holds tensor {}", p.name);
      RankCounts& rc = counts[size_t(stage) * tp + t];
      rc.parameters += int64_t(p.numel);
      if (p.is_expert) rc.expert_parameters += int64_t(p.numel);
      const double share = is_expert_tensor(p.name) && c.is_moe() ? routed_share : 1.0;
      if (p.name != "embed") rc.active_weights += double(p.numel) * share;
      if (p.partial_grad) rc.partial_grad += int64_t(p.numel);
    }
  }
  return counts;
}

ParameterCounts count_parameters(const ModelConfig& c) {
  ParameterCounts p;
  for (const ParamTensor& t : param_table(c)) {
    const int64_t n = int64_t(t.numel);
    const std::string& name = t.name;
    p.total += n;
    if (name == "embed" || name == "lm_head") p.embedding += n;
    else if (is_expert_tensor(name)) p.experts += n;
    else if (t.is_norm) p.norms += n;
    else if (name.size() > 7 && name.substr(name.size() - 7) == "/router") p.router += n;
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
  const double attention_flops = 4.0 * c.seq_length * c.hidden_size * c.num_layers;  // QK^T and PV
  f.train_with_recompute = f.train + (recompute == Recompute::Full        ? f.forward
                                      : recompute == Recompute::Selective ? attention_flops
                                                                          : 0.0);
  return f;
}

}  // namespace mt
