#include "model/router.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "runtime/check.h"

namespace mt {

int expert_capacity(double capacity_factor, int tokens, int experts, int topk) {
  if (capacity_factor <= 0.0) return tokens * topk;
  return int(std::ceil(capacity_factor * double(topk) * double(tokens) / double(experts)));
}

int64_t expert_rows_bound(double capacity_factor, int tokens, int experts, int topk, int ep) {
  const int64_t all = int64_t(ep) * tokens * topk;
  if (ep == 1) return all;
  const int64_t per_source = std::min(expert_capacity(capacity_factor, tokens, experts, topk), tokens);
  return std::min(all, int64_t(experts) * per_source);
}

RouteOptions route_options(const ModelConfig& c) {
  RouteOptions o;
  o.experts = c.num_experts;
  o.topk = c.router_topk;
  o.capacity_factor = c.capacity_factor;
  o.sigmoid = c.router_score_function == "sigmoid";
  o.pre_softmax = c.router_pre_softmax;
  o.scaling = c.router_topk_scaling_factor;
  o.groups = c.router_num_groups;
  o.group_topk = c.router_group_topk;
  o.balancing = c.load_balancing_type == "seq_aux_loss"      ? LoadBalancing::SeqAuxLoss
                : c.load_balancing_type == "global_aux_loss" ? LoadBalancing::GlobalAuxLoss
                : c.load_balancing_type == "none"            ? LoadBalancing::None
                                                             : LoadBalancing::AuxLoss;
  o.aux_coeff = c.aux_loss_coeff;
  o.sequence = c.seq_length;
  return o;
}

namespace {

// Megatron's epsilon under the sigmoid scores' sums.
constexpr double kSigmoidSumEps = 1e-20;

// The k best of v [n] among `allowed` (null: all), best first; a tie goes to
// the lower index (a strict '>').
template <typename V>
void top_k(const V* v, int n, int k, const uint8_t* allowed, int32_t* out) {
  std::vector<uint8_t> taken(size_t(n), 0);
  for (int j = 0; j < k; ++j) {
    int best = -1;
    for (int e = 0; e < n; ++e)
      if (!taken[e] && (!allowed || allowed[e]) && (best < 0 || v[e] > v[best])) best = e;
    taken[best] = 1;
    out[j] = best;
  }
}

// Which experts token t may pick: all, or under group-limited routing those
// of the group_topk groups whose best topk / group_topk values of `sel`
// sum highest (Megatron's group_limited_topk).
std::vector<uint8_t> allowed_experts(const std::vector<double>& sel, const RouteOptions& o) {
  std::vector<uint8_t> allowed(size_t(o.experts), 1);
  if (o.groups == 0) return allowed;
  const int per_group = o.experts / o.groups, best = o.topk / o.group_topk;
  std::vector<double> group_score(static_cast<size_t>(o.groups));
  std::vector<int32_t> picked(size_t(std::max(best, o.group_topk)));
  for (int g = 0; g < o.groups; ++g) {
    top_k(sel.data() + size_t(g) * per_group, per_group, best, nullptr, picked.data());
    double sum = 0.0;
    for (int j = 0; j < best; ++j) sum += sel[size_t(g) * per_group + picked[j]];
    group_score[g] = sum;
  }
  top_k(group_score.data(), o.groups, o.group_topk, nullptr, picked.data());
  std::fill(allowed.begin(), allowed.end(), 0);
  for (int j = 0; j < o.group_topk; ++j)
    std::fill_n(allowed.begin() + ptrdiff_t(picked[j]) * per_group, per_group, 1);
  return allowed;
}

// Token t's experts and weights, best first: top-K of the selection scores
// (scores plus bias) within the allowed groups, weighted by the scores
// renormalised over the K (with the sigmoid's epsilon, and not for a single
// sigmoid pick), or by the softmax itself with pre_softmax; times the
// scaling factor. Softmax routing that renormalises over the K ranks the
// groups on the logits `l`, as Megatron's top-K of the logits does (the
// same experts within a group, not always the same groups).
template <typename T>
void choose_experts(const T* s, const T* l, int t, const RouteOptions& o, Routing& r) {
  const int E = o.experts, K = o.topk;
  std::vector<double> sel(static_cast<size_t>(E));
  for (int e = 0; e < E; ++e) sel[e] = double(s[e]) + (o.bias ? double(o.bias[e]) : 0.0);
  const std::vector<uint8_t> allowed =
      groups_on_logits(o) ? allowed_experts(std::vector<double>(l, l + E), o) : allowed_experts(sel, o);
  int32_t* chosen = r.expert.data() + size_t(t) * K;
  top_k(sel.data(), E, K, o.groups > 0 ? allowed.data() : nullptr, chosen);
  const bool renormalised = o.sigmoid ? K > 1 : !o.pre_softmax;
  double sum = 0.0;
  for (int k = 0; k < K; ++k) sum += double(s[chosen[k]]);
  if (o.sigmoid && renormalised) sum += kSigmoidSumEps;
  r.topk_sum[t] = renormalised ? sum : 0.0;
  for (int k = 0; k < K; ++k) {
    double w = renormalised ? double(s[chosen[k]]) / sum : double(s[chosen[k]]);
    if (o.scaling > 0) w *= o.scaling;
    r.weight[size_t(t) * K + k] = w;
  }
}

// Capacity keeps assignments in token order, whatever their slot; the
// kept ones are packed by expert, then token.
void apply_capacity(Routing& r, const SequenceCapacity* sequences) {
  const int E = r.experts, K = r.topk;
  std::vector<std::vector<int32_t>> per_expert(static_cast<size_t>(E));
  std::vector<int32_t> batch_used(size_t(E), 0);
  for (int t = 0; t < r.tokens; ++t)
    for (int k = 0; k < K; ++k) {
      const size_t s = size_t(t) * K + k;
      const int e = r.expert[s];
      int32_t& used = (sequences ? sequences->used[t] : batch_used.data())[e];
      if (used < r.capacity) {
        ++used;
        per_expert[e].push_back(int32_t(s));
        r.kept[s] = 1;
      } else {
        ++r.dropped;
      }
    }
  r.expert_offset.assign(size_t(E) + 1, 0);
  for (int e = 0; e < E; ++e) {
    r.expert_offset[e + 1] = r.expert_offset[e] + int32_t(per_expert[e].size());
    r.packed_slot.insert(r.packed_slot.end(), per_expert[e].begin(), per_expert[e].end());
  }
}

// The load-balancing loss (Megatron's switch_load_balancing_loss_func over
// compute_routing_scores_for_aux_loss): scores a (the softmax, or the
// sigmoid scores over their sum), f_e and P_e over the micro-batch, each
// sequence, or f_e of the last global batch.
template <typename T>
void balancing_loss(const T* scores, const RouteOptions& o, Routing& r) {
  const int E = o.experts, K = o.topk, tokens = r.tokens;
  r.aux_choices.assign(size_t(E), 0);
  if (o.balancing == LoadBalancing::None) {
    r.choice_share.assign(size_t(E), 0.0);
    r.mean_prob.assign(size_t(E), 0.0);
    return;
  }
  const bool per_sequence = o.balancing == LoadBalancing::SeqAuxLoss;
  const int group = per_sequence ? o.sequence : tokens;  // tokens a share is taken over
  const int groups = tokens / group;
  r.choice_share.assign(size_t(groups) * E, 0.0);
  r.mean_prob.assign(size_t(groups) * E, 0.0);
  if (o.sigmoid) r.aux_norm.resize(size_t(tokens));
  std::vector<double> a(static_cast<size_t>(E));
  std::vector<int32_t> chosen(static_cast<size_t>(K));
  for (int t = 0; t < tokens; ++t) {
    const T* s = scores + size_t(t) * E;
    double norm = 1.0;
    if (o.sigmoid) {
      norm = kSigmoidSumEps;
      for (int e = 0; e < E; ++e) norm += double(s[e]);
      r.aux_norm[t] = norm;
    }
    for (int e = 0; e < E; ++e) a[e] = o.sigmoid ? double(s[e]) / norm : double(s[e]);
    double* share = r.choice_share.data() + size_t(t / group) * E;
    double* mean = r.mean_prob.data() + size_t(t / group) * E;
    top_k(a.data(), E, K, nullptr, chosen.data());
    for (int k = 0; k < K; ++k) {
      share[chosen[k]] += 1.0;
      r.aux_choices[chosen[k]] += 1;
    }
    for (int e = 0; e < E; ++e) mean[e] += a[e];
  }
  double aux = 0.0;
  for (int g = 0; g < groups; ++g)
    for (int e = 0; e < E; ++e) {
      double& share = r.choice_share[size_t(g) * E + e];
      share = o.global_share && o.balancing == LoadBalancing::GlobalAuxLoss ? double(o.global_share[e])
                                                                             : share / (double(group) * K);
      double& mean = r.mean_prob[size_t(g) * E + e];
      mean /= double(group);
      aux += share * mean;
    }
  r.aux_loss = o.aux_coeff * E * aux / groups;
}

}  // namespace

template <typename T>
Routing route_tokens(const T* scores, int tokens, const RouteOptions& o, const SequenceCapacity* sequences,
                     const T* logits) {
  MT_CHECK(logits || !groups_on_logits(o), "group-limited softmax routing ranks the groups on the logits: pass them");
  Routing r;
  r.tokens = tokens;
  r.experts = o.experts;
  r.topk = o.topk;
  r.capacity = sequences ? sequences->capacity : expert_capacity(o.capacity_factor, tokens, o.experts, o.topk);
  r.expert.resize(size_t(tokens) * o.topk);
  r.weight.resize(size_t(tokens) * o.topk);
  r.topk_sum.resize(size_t(tokens));
  r.kept.assign(size_t(tokens) * o.topk, 0);
  for (int t = 0; t < tokens; ++t)
    choose_experts(scores + size_t(t) * o.experts, logits ? logits + size_t(t) * o.experts : nullptr, t, o, r);
  apply_capacity(r, sequences);
  // Generation trains nothing, and its rows are not whole sequences.
  if (sequences)
    r.aux_choices.assign(size_t(o.experts), 0);
  else
    balancing_loss(scores, o, r);
  return r;
}

void RouterState::count(const Routing& r) {
  for (size_t s = 0; s < r.expert.size(); ++s)
    if (r.kept[s]) kept[size_t(r.expert[s])] += 1;
  for (size_t e = 0; e < choices.size(); ++e) choices[e] += r.aux_choices[e];
}

void RouterState::clear_counts() {
  std::fill(kept.begin(), kept.end(), 0);
  std::fill(choices.begin(), choices.end(), 0);
}

template <typename T>
RouterActs<T>::RouterActs(Backend<T>& be, const ModelConfig& cfg, int tokens)
    : probs(be.acc(), size_t(tokens) * cfg.num_experts),
      packed_token(be, size_t(tokens) * cfg.router_topk),
      packed_weight(be.acc(), size_t(tokens) * cfg.router_topk) {}

template <typename T>
RouterScratch<T>::RouterScratch(Backend<T>& be, const ModelConfig& cfg, int tokens)
    : dprobs(be.acc(), size_t(tokens) * cfg.num_experts), dlogits(be.acc(), size_t(tokens) * cfg.num_experts) {
  if constexpr (!std::is_same_v<T, Acc>) dlogits_t = DeviceBuffer<T>(be, size_t(tokens) * cfg.num_experts);
}

namespace {

// z = c mean_t lse_t^2 over the router logits [T, E] (host), keeping each
// token's lse_t for the backward pass.
template <typename Acc>
double router_z_loss(const std::vector<Acc>& logits, int tokens, int E, double coeff, std::vector<double>& lse) {
  lse.resize(tokens);
  double z = 0.0;
  for (int t = 0; t < tokens; ++t) {
    const Acc* r = logits.data() + size_t(t) * E;
    const double top = *std::max_element(r, r + E);
    double sum = 0.0;
    for (int e = 0; e < E; ++e) sum += std::exp(double(r[e]) - top);
    lse[t] = top + std::log(sum);
    z += lse[t] * lse[t];
  }
  return z * (coeff / tokens);
}

// The kept assignments as device rows: each one's token and weight, in
// packed (expert, then token) order.
template <typename T>
void pack_rows(Backend<T>& be, RouterActs<T>& a) {
  using Acc = acc_t<T>;
  const Routing& r = a.routing;
  const int kept = int(r.packed_slot.size());
  std::vector<int32_t> token(kept);
  std::vector<Acc> weight(kept);
  for (int i = 0; i < kept; ++i) {
    token[i] = r.packed_slot[i] / r.topk;
    weight[i] = Acc(r.weight[r.packed_slot[i]]);
  }
  be.int_from_host(a.packed_token.data(), token.data(), kept);
  be.acc().from_host(a.packed_weight.data(), weight.data(), kept);
}

}  // namespace

template <typename T>
RouterLosses router_forward(Backend<T>& be, const ModelConfig& cfg, const RouterState& state, const T* router,
                            RouterActs<T>& a, const T* m, int tokens, const SequenceCapacity* sequences) {
  using Acc = acc_t<T>;
  const int d = cfg.hidden_size, E = cfg.num_experts;
  Backend<Acc>& acc = be.acc();
  be.gemm_acc(Trans::N, Trans::T, tokens, E, d, Acc(1), m, d, router, d, Acc(0), a.probs.data(), E);
  std::vector<Acc>& scores = a.host_scores;
  scores.resize(size_t(tokens) * E);
  double z = 0.0;
  const bool sigmoid = cfg.router_score_function == "sigmoid";
  RouteOptions o = route_options(cfg);
  o.bias = state.expert_bias.empty() ? nullptr : state.expert_bias.data();
  o.global_share = state.global_share.empty() ? nullptr : state.global_share.data();
  // The logits on the host, before the scores replace them: for the z-loss,
  // and the groups of softmax routing.
  const bool logits_kept = (cfg.z_loss_coeff > 0 && sigmoid) || groups_on_logits(o);
  if (cfg.z_loss_coeff > 0 || logits_kept) {
    acc.to_host(scores.data(), a.probs.data(), scores.size());
    if (cfg.z_loss_coeff > 0) z = router_z_loss(scores, tokens, E, cfg.z_loss_coeff, a.lse);
    if (logits_kept) a.host_logits = scores;
  }
  if (sigmoid)
    acc.sigmoid_forward(a.probs.data(), a.probs.data(), scores.size());
  else
    acc.softmax_forward(a.probs.data(), a.probs.data(), tokens, E);
  acc.to_host(scores.data(), a.probs.data(), scores.size());
  a.routing = route_tokens(scores.data(), tokens, o, sequences, groups_on_logits(o) ? a.host_logits.data() : nullptr);
  pack_rows(be, a);
  return {a.routing.aux_loss, z};
}

namespace {

// d loss / d scores of token t [E]: the weights' part, for each chosen
// expert (c dw_k - sum_j dw_j w_j) / sum when the weights are renormalised
// (w_k = c s_k / sum over the chosen), c dw_k when they are the scores
// (c the scaling factor, or 1); and the load-balancing loss's, g_e =
// aux_scale alpha E f_e / T on each a_e, which is s_e (softmax) or s_e / A
// (sigmoid, A their sum: ds_i = (g_i - sum_e g_e a_e) / A). f_e carries no
// gradient. Summed in Acc.
template <typename Acc>
void score_gradient(const Routing& r, const RouteOptions& o, const double* dweight, const Acc* s, int t,
                    double aux_coeff, Acc* ds) {
  const int E = o.experts, K = o.topk;
  const int group = o.balancing == LoadBalancing::SeqAuxLoss ? o.sequence : r.tokens;
  const double* share = r.choice_share.data() + size_t(t / group) * E;
  const double c = o.scaling > 0 ? o.scaling : 1.0;
  if (o.sigmoid && o.balancing != LoadBalancing::None) {
    const double A = r.aux_norm[t];
    double dot = 0.0;
    for (int e = 0; e < E; ++e) dot += aux_coeff * share[e] * (double(s[e]) / A);
    for (int e = 0; e < E; ++e) ds[e] = Acc((aux_coeff * share[e] - dot) / A);
  } else {
    for (int e = 0; e < E; ++e) ds[e] = Acc(aux_coeff * share[e]);
  }
  const double* dw = dweight + size_t(t) * K;
  const double* w = r.weight.data() + size_t(t) * K;
  const int32_t* chosen = r.expert.data() + size_t(t) * K;
  if (r.topk_sum[t] == 0.0) {
    for (int k = 0; k < K; ++k) ds[chosen[k]] += Acc(c * dw[k]);
    return;
  }
  double dot = 0.0;
  for (int k = 0; k < K; ++k) dot += dw[k] * w[k];
  for (int k = 0; k < K; ++k) ds[chosen[k]] += Acc((c * dw[k] - dot) / r.topk_sum[t]);
}

}  // namespace

template <typename T>
void router_backward(Backend<T>& be, const ModelConfig& cfg, const T* router, acc_t<T>* drouter, RouterActs<T>& a,
                     RouterScratch<T>& s, const T* m, const acc_t<T>* dweight_rows, T* dm, int tokens,
                     double aux_scale) {
  using Acc = acc_t<T>;
  const int d = cfg.hidden_size, E = cfg.num_experts, K = cfg.router_topk;
  const RouteOptions o = route_options(cfg);
  const Routing& r = a.routing;
  const int kept = int(r.packed_slot.size());
  Backend<Acc>& acc = be.acc();
  std::vector<Acc> dweight_packed(kept);
  acc.to_host(dweight_packed.data(), dweight_rows, kept);
  std::vector<double> dweight(size_t(tokens) * K, 0.0);  // dropped slots stay 0
  for (int i = 0; i < kept; ++i) dweight[r.packed_slot[i]] = double(dweight_packed[i]);
  std::vector<Acc> dscores(size_t(tokens) * E);
  const double aux_coeff = aux_scale * cfg.aux_loss_coeff * E / tokens;
  for (int t = 0; t < tokens; ++t)
    score_gradient(r, o, dweight.data(), a.host_scores.data() + size_t(t) * E, t, aux_coeff,
                   dscores.data() + size_t(t) * E);
  acc.from_host(s.dprobs.data(), dscores.data(), dscores.size());
  if (o.sigmoid) {
    acc.sigmoid_backward(s.dlogits.data(), s.dprobs.data(), a.probs.data(), dscores.size());
  } else {
    acc.fill(s.dlogits.data(), Acc(0), dscores.size());
    acc.softmax_backward(s.dlogits.data(), s.dprobs.data(), a.probs.data(), tokens, E);
  }
  if (cfg.z_loss_coeff > 0) {
    // d z / d r[t, e] = c 2 lse_t softmax(r)[t, e] / T: the logits' own
    // gradient, past the scores (dprobs is free again to carry it). The
    // softmax is the scores' own, or exp(r - lse) beside sigmoid scores.
    std::vector<Acc> softmax(dscores.size());
    acc.to_host(softmax.data(), a.probs.data(), softmax.size());
    const double z_coeff = aux_scale * cfg.z_loss_coeff * 2.0 / tokens;
    for (int t = 0; t < tokens; ++t)
      for (int e = 0; e < E; ++e) {
        const size_t i = size_t(t) * E + e;
        const double p = o.sigmoid ? std::exp(double(a.host_logits[i]) - a.lse[t]) : double(softmax[i]);
        dscores[i] = Acc(z_coeff * a.lse[t] * p);
      }
    acc.from_host(s.dprobs.data(), dscores.data(), dscores.size());
    acc.axpy(dscores.size(), Acc(1), s.dprobs.data(), s.dlogits.data());
  }
  // The router's products read dlogits in T.
  const T* dlogits = nullptr;
  if constexpr (std::is_same_v<T, Acc>) {
    dlogits = s.dlogits.data();
  } else {
    be.round_from_acc(s.dlogits_t.data(), s.dlogits.data(), dscores.size());
    dlogits = s.dlogits_t.data();
  }
  be.gemm_acc(Trans::T, Trans::N, E, d, tokens, Acc(1), dlogits, E, m, d, Acc(1), drouter, d);
  if (dm) be.gemm(Trans::N, Trans::N, tokens, d, E, T(1), dlogits, E, router, d, T(1), dm, d);
}

template Routing route_tokens<float>(const float*, int, const RouteOptions&, const SequenceCapacity*, const float*);
template Routing route_tokens<double>(const double*, int, const RouteOptions&, const SequenceCapacity*,
                                      const double*);

#define MT_INSTANTIATE_ROUTER(T)                                                                                  \
  template struct RouterActs<T>;                                                                                 \
  template struct RouterScratch<T>;                                                                              \
  template RouterLosses router_forward<T>(Backend<T>&, const ModelConfig&, const RouterState&, const T*,        \
                                          RouterActs<T>&, const T*, int, const SequenceCapacity*);              \
  template void router_backward<T>(Backend<T>&, const ModelConfig&, const T*, acc_t<T>*, RouterActs<T>&,        \
                                   RouterScratch<T>&, const T*, const acc_t<T>*, T*, int, double);
MT_INSTANTIATE_ROUTER(float)
MT_INSTANTIATE_ROUTER(double)
MT_INSTANTIATE_ROUTER(bf16)

}  // namespace mt
