#include "launch/generation.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <numeric>

#include "data/byte_tokenizer.h"
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
Continuation continue_prompt(PipelineRunner<T>& pipeline, const Transformer<T>& model, Topology& topo,
                             std::vector<int32_t> tokens, int max_new, const Sampling& sampling, uint64_t stream) {
  const ModelConfig& mc = model.config();
  const int S = mc.seq_length, V = data::ByteTokenizer::kVocabSize;
  const TpShape shape = tp_shape(mc, topo.coords().tp, topo.tp_size());
  const bool last_stage = topo.coords().pp == topo.pp_size() - 1;
  // The rank that picks: the last stage's first TP rank of replica 0.
  const int picker = rank_of(Coords{0, 0, topo.pp_size() - 1}, topo.tp_size(), topo.dp_size());
  Continuation c;
  std::vector<int32_t> sample(size_t(S) + 1);
  for (int step = 0; step < max_new && int(tokens.size()) < S; ++step) {
    std::fill(sample.begin(), sample.end(), 0);
    std::copy(tokens.begin(), tokens.end(), sample.begin());
    pipeline.forward(sample.data(), 1);
    double picked[2] = {0, 0};  // the token and its margin over the runner-up, sent together
    if (last_stage) {
      // The prefix's last position, every TP rank's slice side by side.
      std::vector<float> row(size_t(shape.vocab) * size_t(topo.tp_size()));
      const acc_t<T>* mine = model.logits(0) + (tokens.size() - 1) * size_t(shape.vocab);
      std::copy(mine, mine + shape.vocab, row.begin() + ptrdiff_t(topo.coords().tp) * shape.vocab);
      if (topo.tp_size() > 1) topo.tp().all_gather(row.data(), size_t(shape.vocab), DType::F32);
      const std::vector<double> logits(row.begin(), row.begin() + V);  // the padded ids are never tokens
      picked[0] = pick_token(logits, sampling, philox_uniform(sampling.seed, stream, uint64_t(step)));
      std::vector<double> sorted = logits;
      std::partial_sort(sorted.begin(), sorted.begin() + 2, sorted.end(), std::greater<>());
      picked[1] = sorted[0] - sorted[1];
    }
    topo.world().broadcast(picked, 2, DType::F64, picker);
    const int32_t token = int32_t(picked[0]);
    if (token == data::ByteTokenizer::kEod) break;
    tokens.push_back(token);
    c.tokens.push_back(token);
    c.margins.push_back(picked[1]);
  }
  return c;
}

template Continuation continue_prompt<float>(PipelineRunner<float>&, const Transformer<float>&, Topology&,
                                             std::vector<int32_t>, int, const Sampling&, uint64_t);
template Continuation continue_prompt<bf16>(PipelineRunner<bf16>&, const Transformer<bf16>&, Topology&,
                                            std::vector<int32_t>, int, const Sampling&, uint64_t);

}  // namespace mt
