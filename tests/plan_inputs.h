// The planner's inputs for a model on a layout, as the planner tests build
// them (the GPU, precision and recompute left at their defaults).
#pragma once

#include "planner/plan.h"

namespace mt::test_util {

inline PlanInputs plan_inputs(const ModelConfig& c, int tp, int pp, int dp, int micro, int64_t global, int ep = 1) {
  PlanInputs in;
  in.model = c;
  in.layout.tp = tp;
  in.layout.pp = pp;
  in.layout.dp = dp;
  in.layout.ep = ep;
  in.layout.micro_batch = micro;
  in.global_batch = global;
  return in;
}

}  // namespace mt::test_util
