#include "generation/batched_decoding.h"

#include <deque>
#include <numeric>


namespace mt {

template <typename T>
BatchedContinuations continue_prompts(PipelineRunner<T>& pipeline, Transformer<T>& model, KvCache<T>& cache,
                                      Topology& topo, const std::vector<Prompt>& prompts, const Sampling& sampling,
                                      Batching batching, const TokenCallback& on_token) {
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
      const bool eod = picks[i].token == sampling.eod;
      if (!eod) {
        if (on_token) on_token(r.prompt, picks[i].token);
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

#define MT_INSTANTIATE_BATCHED_DECODING(T)                                                                       \
  template BatchedContinuations continue_prompts<T>(PipelineRunner<T>&, Transformer<T>&, KvCache<T>&, Topology&, \
                                                    const std::vector<Prompt>&, const Sampling&, Batching, \
                                                    const TokenCallback&);
MT_INSTANTIATE_BATCHED_DECODING(float)
MT_INSTANTIATE_BATCHED_DECODING(double)
MT_INSTANTIATE_BATCHED_DECODING(bf16)

}  // namespace mt
