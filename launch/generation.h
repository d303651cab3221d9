// Continuing prompts with a model on any layout, for `moetrain generate`
// and train's samples (--sample-interval). Two ways, which pick the same
// tokens: with a key/value cache (model/kv_cache.h), several sequences at
// once, each new token costing one position of work; or from the full
// forward pass over each prefix, padded to the context (causal attention
// keeps the padding out of the prefix's last position), the reference the
// cache reproduces. The last stage gathers the logits rows it needs over
// its TP group and picks the tokens; every rank learns them by a broadcast
// from there.
#pragma once

#include <cstdint>
#include <vector>

#include "launch/options.h"
#include "model/kv_cache.h"
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

// Collective over topo's world, from the full forward pass over each
// prefix. `stream` numbers the continuation among a run's, so that each
// draws its own random numbers from the seed.
template <typename T>
Continuation continue_prompt(PipelineRunner<T>& pipeline, Transformer<T>& model, Topology& topo,
                             std::vector<int32_t> prefix, int max_new, const Sampling& sampling, uint64_t stream);

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
                                      Batching batching);

// The token a row of logits picks: the highest (ties to the lower id) at
// temperature 0; else a draw (u in [0, 1)) from the softmax at the
// temperature over the top-k tokens holding probability top-p.
int pick_token(const std::vector<double>& logits, const Sampling& sampling, double u);

}  // namespace mt
