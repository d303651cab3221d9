// Continuing a prompt with a model on any layout, for `moetrain generate`
// and train's samples (--sample-interval): each token from the full forward
// pass over the prefix, padded to the context (causal attention keeps the
// padding out of the prefix's last position). The last stage gathers that
// position's logits over its TP group and picks the token; every rank
// learns it by a broadcast from there.
#pragma once

#include <cstdint>
#include <vector>

#include "launch/options.h"
#include "model/transformer.h"
#include "parallel/pipeline_runner.h"
#include "runtime/topology.h"

namespace mt {

struct Continuation {
  std::vector<int32_t> tokens;  // the new ones: up to the end-of-document token, max_new or the context's end
  std::vector<double> margins;  // each token's logit over the runner-up's
};

// Collective over topo's world. `stream` numbers the continuation among a
// run's, so that each draws its own random numbers from the seed.
template <typename T>
Continuation continue_prompt(PipelineRunner<T>& pipeline, const Transformer<T>& model, Topology& topo,
                             std::vector<int32_t> prefix, int max_new, const Sampling& sampling, uint64_t stream);

// The token a row of logits picks: the highest (ties to the lower id) at
// temperature 0; else a draw (u in [0, 1)) from the softmax at the
// temperature over the top-k tokens holding probability top-p.
int pick_token(const std::vector<double>& logits, const Sampling& sampling, double u);

}  // namespace mt
