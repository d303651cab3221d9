// `moetrain plan`'s flags turned into the cost model's inputs
// (launch/plan_command.cpp): each error names its flag.
#include <gtest/gtest.h>

#include "launch/commands.h"
#include "test_util.h"

namespace mt {
namespace {

TEST(Plan, FlagErrorsNameTheFlag) {
  PlanOptions o;
  o.num_gpus = 6;
  o.train.topology.tensor_parallel = 4;
  test_util::expect_error([&] { resolve_plan_inputs(o); }, {"--num-gpus 6 is not divisible by"});
  o.num_gpus = 0;
  o.gpu = "v100";
  test_util::expect_error([&] { resolve_plan_inputs(o); }, {"--gpu v100", "h100-80gb"});
  o.gpu = "h200";
  o.precision = "fp8";
  test_util::expect_error([&] { resolve_plan_inputs(o); }, {"--precision must be fp32 or bf16"});
  o.precision.clear();
  o.train.recompute_granularity = "some";
  test_util::expect_error([&] { resolve_plan_inputs(o); }, {"--recompute-granularity must be none, selective or full, got 'some'"});
  o.train.recompute_granularity = "full";
  o.train.recompute_method = "every";
  test_util::expect_error([&] { resolve_plan_inputs(o); }, {"--recompute-method must be uniform or block, got 'every'"});
  o.train.recompute_method = "block";
  o.train.recompute_num_layers = 0;
  test_util::expect_error([&] { resolve_plan_inputs(o); }, {"--recompute-num-layers must be >= 1, got 0"});
  o.train.recompute_num_layers = 1;
  o.train.recompute_granularity = "none";
  o.search = true;
  test_util::expect_error([&] { resolve_plan_inputs(o); }, {"--search needs --num-gpus"});
  // Defaults: bf16 with a GPU, fp32 (the CPU build's) without.
  o.search = false;
  EXPECT_EQ(resolve_plan_inputs(o).precision, Precision::BF16);
  o.gpu.clear();
  EXPECT_EQ(resolve_plan_inputs(o).precision, Precision::FP32);
}

}  // namespace
}  // namespace mt
