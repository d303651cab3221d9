#include "generation/sampling.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <numeric>

#include "runtime/check.h"
#include "runtime/philox.h"

namespace mt {

int pick_token(const std::vector<double>& logits, const Sampling& s, double u) {
  std::vector<int> ids(logits.size());
  std::iota(ids.begin(), ids.end(), 0);
  std::stable_sort(ids.begin(), ids.end(), [&](int a, int b) { return logits[size_t(a)] > logits[size_t(b)]; });
  if (s.temperature == 0.0) return ids[0];
  const size_t k = s.top_k > 0 ? std::min(ids.size(), size_t(s.top_k)) : ids.size();
  std::vector<double> p(k);
  for (size_t i = 0; i < k; ++i) p[i] = std::exp((logits[size_t(ids[i])] - logits[size_t(ids[0])]) / s.temperature);
  const double total = std::accumulate(p.begin(), p.end(), 0.0);
  size_t kept = 0;
  for (double mass = 0; kept < k && (kept == 0 || mass < s.top_p * total); ++kept) mass += p[kept];
  double target = u * std::accumulate(p.begin(), p.begin() + ptrdiff_t(kept), 0.0);
  for (size_t i = 0; i < kept; ++i) {
    target -= p[i];
    if (target < 0) return ids[i];
  }
  return ids[kept - 1];
}

template <typename T>
std::vector<Pick> pick_tokens(Transformer<T>& model, Topology& topo, const std::vector<Draw>& draws,
                              const Sampling& sampling) {
  const size_t m = draws.size(), V = size_t(sampling.vocab);
  MT_CHECK(sampling.vocab >= 2 && sampling.vocab <= model.config().vocab_size,
           "sampling over {} ids, but the model's vocabulary is {}", sampling.vocab, model.config().vocab_size);
  const int tp = topo.tp().size;
  const size_t slice = size_t(tp_shape(model.config(), topo.coords().tp, tp).vocab);
  const int picker = rank_of(Coords{0, 0, topo.pp().size - 1}, tp, topo.dp().size);
  std::vector<double> picked(2 * m);  // token and margin of each draw, sent together
  if (topo.coords().pp == topo.pp().size - 1) {
    // [TP rank][draw][slice]: each rank's slices of the rows, gathered in place.
    std::vector<double> all(size_t(tp) * m * slice);
    std::vector<acc_t<T>> row(slice);
    for (size_t i = 0; i < m; ++i) {
      model.backend().acc().to_host(row.data(), model.logits(0) + draws[i].row * slice, slice);
      std::copy(row.begin(), row.end(), all.begin() + ptrdiff_t((size_t(topo.coords().tp) * m + i) * slice));
    }
    if (tp > 1) topo.tp().comm->all_gather(all.data(), m * slice, DType::F64);
    std::vector<double> logits(V);
    for (size_t i = 0; i < m; ++i) {
      for (size_t id = 0; id < V; ++id) logits[id] = all[((id / slice) * m + i) * slice + id % slice];
      for (int32_t id : sampling.gaps) logits[size_t(id)] = -std::numeric_limits<double>::infinity();
      picked[2 * i] = pick_token(logits, sampling, philox_uniform(sampling.seed, draws[i].stream, draws[i].step));
      std::vector<double> sorted = logits;
      std::partial_sort(sorted.begin(), sorted.begin() + 2, sorted.end(), std::greater<>());
      picked[2 * i + 1] = sorted[0] - sorted[1];
    }
  }
  topo.world().broadcast(picked.data(), picked.size(), DType::F64, picker);
  std::vector<Pick> out(m);
  for (size_t i = 0; i < m; ++i) out[i] = {int32_t(picked[2 * i]), picked[2 * i + 1]};
  return out;
}

template std::vector<Pick> pick_tokens<float>(Transformer<float>&, Topology&, const std::vector<Draw>&,
                                              const Sampling&);
template std::vector<Pick> pick_tokens<double>(Transformer<double>&, Topology&, const std::vector<Draw>&,
                                               const Sampling&);
template std::vector<Pick> pick_tokens<bf16>(Transformer<bf16>&, Topology&, const std::vector<Draw>&,
                                             const Sampling&);

}  // namespace mt
