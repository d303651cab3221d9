// Continuing a prompt from the full forward pass over its prefix, padded to
// the context (causal attention keeps the padding out of the prefix's last
// position): the reference decode loop, which the key/value cache
// (batched_decoding.h) reproduces, and train's samples while training.
#pragma once

#include <chrono>
#include <cstdint>
#include <vector>

#include "generation/sampling.h"
#include "model/transformer.h"
#include "parallel/pipeline_runner.h"
#include "parallel/topology.h"

namespace mt {

struct Continuation {
  std::vector<int32_t> tokens;  // the new ones: up to the end-of-document token, max_new or the context's end
  std::vector<double> margins;  // each token's logit over the runner-up's
  double seconds = 0;           // from the prompt's first step to its last
  int64_t steps = 0;            // forward passes that picked its tokens (shared, batched)
};

inline double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Collective over topo's world. `stream` numbers the continuation among a
// run's, so that each draws its own random numbers from the seed.
template <typename T>
Continuation continue_prompt(PipelineRunner<T>& pipeline, Transformer<T>& model, Topology& topo,
                             std::vector<int32_t> prefix, int max_new, const Sampling& sampling, uint64_t stream,
                             const TokenCallback& on_token = {});

}  // namespace mt
