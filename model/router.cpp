#include "model/router.h"

#include <algorithm>
#include <cmath>

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

template <typename T>
Routing route_tokens(const T* probs, int tokens, int experts, int topk, double capacity_factor,
                     double aux_coeff, const SequenceCapacity* sequences) {
  Routing r;
  r.tokens = tokens;
  r.experts = experts;
  r.topk = topk;
  r.capacity = sequences ? sequences->capacity : expert_capacity(capacity_factor, tokens, experts, topk);
  r.expert.resize(size_t(tokens) * topk);
  r.weight.resize(size_t(tokens) * topk);
  r.topk_sum.resize(tokens);
  r.kept.assign(size_t(tokens) * topk, 0);
  r.choice_share.assign(experts, 0.0);
  r.mean_prob.assign(experts, 0.0);

  std::vector<uint8_t> taken(experts);
  for (int t = 0; t < tokens; ++t) {
    const T* p = probs + size_t(t) * experts;
    std::fill(taken.begin(), taken.end(), 0);
    double sum = 0.0;
    for (int k = 0; k < topk; ++k) {
      // Largest remaining; strict '>' keeps the lower index on ties.
      int best = -1;
      for (int e = 0; e < experts; ++e)
        if (!taken[e] && (best < 0 || p[e] > p[best])) best = e;
      taken[best] = 1;
      r.expert[size_t(t) * topk + k] = best;
      sum += double(p[best]);
    }
    r.topk_sum[t] = sum;
    for (int k = 0; k < topk; ++k) {
      size_t s = size_t(t) * topk + k;
      r.weight[s] = double(p[r.expert[s]]) / sum;
      r.choice_share[r.expert[s]] += 1.0;
    }
    for (int e = 0; e < experts; ++e) r.mean_prob[e] += double(p[e]);
  }

  // Capacity keeps assignments in token order, whatever their slot.
  std::vector<std::vector<int32_t>> per_expert(experts);
  std::vector<int32_t> batch_used(experts, 0);
  for (int t = 0; t < tokens; ++t)
    for (int k = 0; k < topk; ++k) {
      size_t s = size_t(t) * topk + k;
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
  r.expert_offset.assign(experts + 1, 0);
  for (int e = 0; e < experts; ++e) {
    r.expert_offset[e + 1] = r.expert_offset[e] + int32_t(per_expert[e].size());
    r.packed_slot.insert(r.packed_slot.end(), per_expert[e].begin(), per_expert[e].end());
  }

  double aux = 0.0;
  for (int e = 0; e < experts; ++e) {
    r.choice_share[e] /= double(tokens) * topk;
    r.mean_prob[e] /= double(tokens);
    aux += r.choice_share[e] * r.mean_prob[e];
  }
  r.aux_loss = aux_coeff * experts * aux;
  return r;
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
RouterLosses router_forward(Backend<T>& be, const ModelConfig& cfg, const T* router, RouterActs<T>& a, const T* m,
                            int tokens, const SequenceCapacity* sequences) {
  using Acc = acc_t<T>;
  const int d = cfg.hidden_size, E = cfg.num_experts;
  Backend<Acc>& acc = be.acc();
  be.gemm_acc(Trans::N, Trans::T, tokens, E, d, Acc(1), m, d, router, d, Acc(0), a.probs.data(), E);
  std::vector<Acc> probs(size_t(tokens) * E);
  double z = 0.0;
  if (cfg.z_loss_coeff > 0) {  // from the logits, before the softmax replaces them
    acc.to_host(probs.data(), a.probs.data(), probs.size());
    z = router_z_loss(probs, tokens, E, cfg.z_loss_coeff, a.lse);
  }
  acc.softmax_forward(a.probs.data(), a.probs.data(), tokens, E);
  acc.to_host(probs.data(), a.probs.data(), probs.size());
  a.routing =
      route_tokens(probs.data(), tokens, E, cfg.router_topk, cfg.capacity_factor, cfg.aux_loss_coeff, sequences);
  pack_rows(be, a);
  return {a.routing.aux_loss, z};
}

template <typename T>
void router_backward(Backend<T>& be, const ModelConfig& cfg, const T* router, acc_t<T>* drouter, RouterActs<T>& a,
                     RouterScratch<T>& s, const T* m, const acc_t<T>* dweight_rows, T* dm, int tokens,
                     double aux_scale) {
  using Acc = acc_t<T>;
  const int d = cfg.hidden_size, E = cfg.num_experts, K = cfg.router_topk;
  const Routing& r = a.routing;
  const int kept = int(r.packed_slot.size());
  Backend<Acc>& acc = be.acc();
  // w_k = p_k / s with s the top-K sum, so for a top-K expert
  // dp_k = (dw_k - sum_j dw_j w_j) / s; the aux loss adds
  // alpha * E * f_e / T to every dp_e (f_e carries no gradient).
  std::vector<Acc> dweight_packed(kept);
  acc.to_host(dweight_packed.data(), dweight_rows, kept);
  std::vector<double> dweight(size_t(tokens) * K, 0.0);  // dropped slots stay 0
  for (int i = 0; i < kept; ++i) dweight[r.packed_slot[i]] = double(dweight_packed[i]);
  std::vector<Acc> dprobs(size_t(tokens) * E);
  const double aux_coeff = aux_scale * cfg.aux_loss_coeff * E / tokens;
  for (int t = 0; t < tokens; ++t) {
    double dot = 0.0;
    for (int k = 0; k < K; ++k) dot += dweight[size_t(t) * K + k] * r.weight[size_t(t) * K + k];
    for (int e = 0; e < E; ++e) dprobs[size_t(t) * E + e] = Acc(aux_coeff * r.choice_share[e]);
    for (int k = 0; k < K; ++k) {
      size_t slot = size_t(t) * K + k;
      dprobs[size_t(t) * E + r.expert[slot]] += Acc((dweight[slot] - dot) / r.topk_sum[t]);
    }
  }
  acc.from_host(s.dprobs.data(), dprobs.data(), dprobs.size());
  acc.fill(s.dlogits.data(), Acc(0), dprobs.size());
  acc.softmax_backward(s.dlogits.data(), s.dprobs.data(), a.probs.data(), tokens, E);
  if (cfg.z_loss_coeff > 0) {
    // d z / d r[t, e] = c 2 lse_t p[t, e] / T: the logits' own gradient,
    // past the softmax (dprobs is free again to carry it).
    std::vector<Acc> probs(dprobs.size());
    acc.to_host(probs.data(), a.probs.data(), probs.size());
    const double z_coeff = aux_scale * cfg.z_loss_coeff * 2.0 / tokens;
    for (int t = 0; t < tokens; ++t)
      for (int e = 0; e < E; ++e) {
        const size_t i = size_t(t) * E + e;
        dprobs[i] = Acc(z_coeff * a.lse[t] * double(probs[i]));
      }
    acc.from_host(s.dprobs.data(), dprobs.data(), dprobs.size());
    acc.axpy(dprobs.size(), Acc(1), s.dprobs.data(), s.dlogits.data());
  }
  // The router's products read dlogits in T.
  const T* dlogits = nullptr;
  if constexpr (std::is_same_v<T, Acc>) {
    dlogits = s.dlogits.data();
  } else {
    be.round_from_acc(s.dlogits_t.data(), s.dlogits.data(), dprobs.size());
    dlogits = s.dlogits_t.data();
  }
  be.gemm_acc(Trans::T, Trans::N, E, d, tokens, Acc(1), dlogits, E, m, d, Acc(1), drouter, d);
  be.gemm(Trans::N, Trans::N, tokens, d, E, T(1), dlogits, E, router, d, T(1), dm, d);
}

template Routing route_tokens<float>(const float*, int, int, int, double, double, const SequenceCapacity*);
template Routing route_tokens<double>(const double*, int, int, int, double, double, const SequenceCapacity*);

#define MT_INSTANTIATE_ROUTER(T)                                                                                  \
  template struct RouterActs<T>;                                                                                 \
  template struct RouterScratch<T>;                                                                              \
  template RouterLosses router_forward<T>(Backend<T>&, const ModelConfig&, const T*, RouterActs<T>&, const T*,  \
                                          int, const SequenceCapacity*);                                         \
  template void router_backward<T>(Backend<T>&, const ModelConfig&, const T*, acc_t<T>*, RouterActs<T>&,        \
                                   RouterScratch<T>&, const T*, const acc_t<T>*, T*, int, double);
MT_INSTANTIATE_ROUTER(float)
MT_INSTANTIATE_ROUTER(double)
MT_INSTANTIATE_ROUTER(bf16)

}  // namespace mt
