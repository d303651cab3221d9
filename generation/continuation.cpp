#include "generation/continuation.h"

#include <algorithm>


namespace mt {

template <typename T>
Continuation continue_prompt(PipelineRunner<T>& pipeline, Transformer<T>& model, Topology& topo,
                             std::vector<int32_t> tokens, int max_new, const Sampling& sampling, uint64_t stream,
                             const TokenCallback& on_token) {
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
    if (p.token == sampling.eod) break;
    if (on_token) on_token(stream, p.token);
    tokens.push_back(p.token);
    c.tokens.push_back(p.token);
    c.margins.push_back(p.margin);
  }
  c.seconds = seconds_since(start);
  return c;
}

template Continuation continue_prompt<float>(PipelineRunner<float>&, Transformer<float>&, Topology&,
                                              std::vector<int32_t>, int, const Sampling&, uint64_t,
                                              const TokenCallback&);
template Continuation continue_prompt<double>(PipelineRunner<double>&, Transformer<double>&, Topology&,
                                               std::vector<int32_t>, int, const Sampling&, uint64_t,
                                              const TokenCallback&);
template Continuation continue_prompt<bf16>(PipelineRunner<bf16>&, Transformer<bf16>&, Topology&,
                                             std::vector<int32_t>, int, const Sampling&, uint64_t,
                                              const TokenCallback&);

}  // namespace mt
