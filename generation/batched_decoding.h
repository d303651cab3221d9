// Continuing many prompts at once with a key/value cache (model/kv_cache.h):
// each step takes every running sequence's tokens not yet in the cache (a
// new prompt's whole prefix, then one token a step) through one forward
// pass, and picks each sequence's next token from its last row. A sequence
// that ends frees its slot for the next prompt.
#pragma once

#include <cstdint>
#include <vector>

#include "generation/continuation.h"
#include "model/kv_cache.h"

namespace mt {

// How the prompts share a cache of several sequences: Continuous
// (iteration-level scheduling, as Orca and vLLM do: a sequence that ends
// frees its slot and the next prompt joins at the next step) or Static (the
// next prompts wait until every sequence of the batch has ended).
enum class Batching { Continuous, Static };

struct BatchedContinuations {
  std::vector<Continuation> continuations;  // a prompt's each
  int64_t steps = 0;                        // forward passes through the model
};

struct Prompt {
  std::vector<int32_t> tokens;
  int max_new = 1;  // tokens to generate at most
};

// Collective over topo's world: every prompt continued with the cache,
// which holds up to cache.shape.sequences of them at once; prompt p draws
// from stream p, so each continuation is that of the prompt alone.
template <typename T>
BatchedContinuations continue_prompts(PipelineRunner<T>& pipeline, Transformer<T>& model, KvCache<T>& cache,
                                      Topology& topo, const std::vector<Prompt>& prompts, const Sampling& sampling,
                                      Batching batching, const TokenCallback& on_token = {});

}  // namespace mt
