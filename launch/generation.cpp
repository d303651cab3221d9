#include "launch/generation.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <deque>
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

namespace {

// A token to pick: from the last stage's logits row `row`, with the random
// number of (stream, step).
struct Draw {
  size_t row;
  uint64_t stream, step;
};
struct Pick {
  int32_t token;
  double margin;  // its logit over the runner-up's
};

// Collective over topo's world: the tokens the draws pick. The last stage
// gathers each row's vocabulary slices over its TP group, its first TP rank
// of replica 0 picks, and every rank learns the picks from it.
template <typename T>
std::vector<Pick> pick_tokens(Transformer<T>& model, Topology& topo, const std::vector<Draw>& draws,
                              const Sampling& sampling) {
  const size_t m = draws.size(), V = size_t(data::ByteTokenizer::kVocabSize);
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

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

template <typename T>
Continuation continue_prompt(PipelineRunner<T>& pipeline, Transformer<T>& model, Topology& topo,
                             std::vector<int32_t> tokens, int max_new, const Sampling& sampling, uint64_t stream) {
  const int S = model.config().seq_length;
  const auto start = std::chrono::steady_clock::now();
  Continuation c;
  std::vector<int32_t> sample(size_t(S) + 1);
  for (int step = 0; step < max_new && int(tokens.size()) < S; ++step) {
    std::fill(sample.begin(), sample.end(), 0);
    std::copy(tokens.begin(), tokens.end(), sample.begin());
    pipeline.forward(sample.data(), 1);
    ++c.steps;
    const Pick p = pick_tokens(model, topo, {Draw{tokens.size() - 1, stream, uint64_t(step)}}, sampling)[0];
    if (p.token == data::ByteTokenizer::kEod) break;
    tokens.push_back(p.token);
    c.tokens.push_back(p.token);
    c.margins.push_back(p.margin);
  }
  c.seconds = seconds_since(start);
  return c;
}

template <typename T>
BatchedContinuations continue_prompts(PipelineRunner<T>& pipeline, Transformer<T>& model, KvCache<T>& cache,
                                      Topology& topo, const std::vector<Prompt>& prompts, const Sampling& sampling,
                                      Batching batching) {
  const int S = model.config().seq_length;
  struct Running {
    size_t prompt;
    int slot;
    std::vector<int32_t> tokens;  // the prompt and what follows it
    size_t cached;                // positions in the cache
    std::chrono::steady_clock::time_point start;
  };
  BatchedContinuations out{std::vector<Continuation>(prompts.size()), 0};
  std::vector<Continuation>& done = out.continuations;
  std::deque<size_t> waiting(prompts.size());
  std::iota(waiting.begin(), waiting.end(), size_t(0));
  std::vector<int> free_slots(size_t(cache.shape.sequences));
  std::iota(free_slots.rbegin(), free_slots.rend(), 0);
  std::vector<Running> running;
  while (!waiting.empty() || !running.empty()) {
    if (batching == Batching::Continuous || running.empty())
      for (; !waiting.empty() && !free_slots.empty(); waiting.pop_front(), free_slots.pop_back()) {
        cache.start(free_slots.back());
        running.push_back({waiting.front(), free_slots.back(), prompts[waiting.front()].tokens, 0,
                           std::chrono::steady_clock::now()});
      }
    // Each sequence's tokens not yet in the cache: a new prompt's all, then one a step.
    DecodeRows rows;
    std::vector<Draw> draws;
    for (Running& r : running) {
      for (; r.cached < r.tokens.size(); ++r.cached) rows.add(r.tokens[r.cached], r.slot, int32_t(r.cached));
      draws.push_back({size_t(rows.size()) - 1, r.prompt, uint64_t(done[r.prompt].tokens.size())});
    }
    pipeline.forward_with(size_t(rows.size()) * size_t(model.config().hidden_size), [&] {
      model.decode_stage(rows, cache);
      return MicroBatchLoss{};
    });
    ++out.steps;
    const std::vector<Pick> picks = pick_tokens(model, topo, draws, sampling);
    std::vector<Running> still;
    for (size_t i = 0; i < running.size(); ++i) {
      Running& r = running[i];
      Continuation& c = done[r.prompt];
      ++c.steps;
      const bool eod = picks[i].token == data::ByteTokenizer::kEod;
      if (!eod) {
        r.tokens.push_back(picks[i].token);
        c.tokens.push_back(picks[i].token);
        c.margins.push_back(picks[i].margin);
      }
      if (eod || int(c.tokens.size()) == prompts[r.prompt].max_new || int(r.tokens.size()) == S) {
        c.seconds = seconds_since(r.start);
        free_slots.push_back(r.slot);
      } else {
        still.push_back(std::move(r));
      }
    }
    running = std::move(still);
  }
  return out;
}

#define MT_INSTANTIATE_GENERATION(T)                                                                              \
  template Continuation continue_prompt<T>(PipelineRunner<T>&, Transformer<T>&, Topology&, std::vector<int32_t>, \
                                           int, const Sampling&, uint64_t);                                      \
  template BatchedContinuations continue_prompts<T>(PipelineRunner<T>&, Transformer<T>&, KvCache<T>&, Topology&, \
                                                    const std::vector<Prompt>&, const Sampling&, Batching);
MT_INSTANTIATE_GENERATION(float)
MT_INSTANTIATE_GENERATION(double)
MT_INSTANTIATE_GENERATION(bf16)

}  // namespace mt
