#include "model/routing.h"

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

template Routing route_tokens<float>(const float*, int, int, int, double, double, const SequenceCapacity*);
template Routing route_tokens<double>(const double*, int, int, int, double, double, const SequenceCapacity*);

}  // namespace mt
