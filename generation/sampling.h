// How generation picks each token from the last stage's logits, for
// `moetrain generate` and train's samples (--sample-interval): greedy, or a
// draw from the softmax at a temperature over the top-k tokens holding
// top-p of the probability, with a random number that depends only on the
// seed, the continuation and the token's index.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "model/transformer.h"
#include "parallel/topology.h"

namespace mt {

struct Sampling {
  double temperature = 1.0;  // 0: greedy (argmax, ties to the lower id)
  int top_k = 0;             // 0: every token
  double top_p = 1.0;        // nucleus; 1: every token
  uint64_t seed = 1234;
  // From the model's tokenizer, not flags: ids are picked among [0, vocab),
  // never the rows that pad the vocabulary, and eod ends a continuation.
  int32_t vocab = 257;
  int32_t eod = 256;
  std::vector<int32_t> gaps = {};  // ids below vocab that are no token (Tokenizer::gaps)
};

// Called with each token a continuation keeps, as it is picked (on every
// rank), so that text can be printed as it is produced.
using TokenCallback = std::function<void(size_t prompt, int32_t token)>;

// The token a row of logits picks: the highest (ties to the lower id) at
// temperature 0; else a draw (u in [0, 1)) from the softmax at the
// temperature over the top-k tokens holding probability top-p.
int pick_token(const std::vector<double>& logits, const Sampling& sampling, double u);

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

// Collective over topo's world: the tokens the draws pick from the logits
// of the model's last forward pass. The last stage gathers each row's
// vocabulary slices over its TP group, its first TP rank of replica 0
// picks, and every rank learns the picks from it.
template <typename T>
std::vector<Pick> pick_tokens(Transformer<T>& model, Topology& topo, const std::vector<Draw>& draws,
                              const Sampling& sampling);

}  // namespace mt
