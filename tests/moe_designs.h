// The routing of DeepSeek-V3 (docs/design.md section 3.3), which several
// tests give their tiny models: sigmoid scores over 2 expert groups of
// which a token keeps one, the expert bias (moved fast enough to matter in
// a test of 20 steps), DeepSeek's scaling factor 2.5 and its per-sequence
// balancing loss. The model's E must be even.
#pragma once

#include "model/config.h"

namespace mt::test_util {

inline void deepseek_routing(ModelConfig& m) {
  m.router_score_function = "sigmoid";
  m.expert_bias = true;
  m.expert_bias_update_rate = 1e-2;
  m.router_num_groups = 2;
  m.router_group_topk = 1;
  m.router_topk_scaling_factor = 2.5;
  m.load_balancing_type = "seq_aux_loss";
}

}  // namespace mt::test_util
