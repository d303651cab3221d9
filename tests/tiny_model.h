// The tiny model the end-to-end tests train, as flags and as the
// ModelConfig they make, for tests that plan or build it in process.
#pragma once

#include <string>

#include "model/config.h"
#include "test_util.h"

namespace mt::test_util {

// The tiny config the end-to-end tests train: a 2-layer MoE (E=4, top-2, MQA).
inline std::string tiny_model_flags() {
  // The vocabulary is padded to a multiple of 48 x TP: 384 at TP 1, 2, 4
  // and 8, so that every layout trains the same model.
  return "--vocab-size 384 --make-vocab-size-divisible-by 48 "
         "--num-layers 2 --hidden-size 64 --num-attention-heads 4 --num-query-groups 1 "
         "--ffn-hidden-size 128 --num-experts 4 --moe-router-topk 2 --seq-length 64 "
         "--micro-batch-size 4 --global-batch-size 8 --lr 3e-3 --min-lr 3e-4 "
         "--lr-warmup-samples 40 --seed 7 --threads " + std::to_string(test_threads());
}

// The ModelConfig tiny_model_flags() makes.
inline ModelConfig tiny_model_config() {
  ModelConfig c{.vocab_size = 384, .hidden_size = 64, .num_layers = 2, .num_heads = 4, .num_query_groups = 1,
                .ffn_hidden_size = 128, .num_experts = 4, .router_topk = 2, .seq_length = 64};
  return c;
}

}  // namespace mt::test_util
