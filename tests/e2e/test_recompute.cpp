// Activation recompute through the real binary: every granularity and
// method trains bit for bit what the run without it trains (losses, weights
// and Adam moments), at one rank and at TP2 x PP2 x DP2 (1F1B, so that
// several micro-batches are alive on a stage, each holding only what its
// recompute keeps).
#include <gtest/gtest.h>

#include "run_moetrain.h"
#include "same_training.h"

namespace mt {
namespace {

using test_util::run_moetrain;

class ActivationRecompute : public ::testing::Test {
 protected:
  void SetUp() override { test_util::make_store(dir, "store", test_util::synthetic_text(60000, 11)); }
  // 4 layers, micro-batch 2, global batch 8: at TP2 x PP2 x DP2 each replica
  // runs 2 micro-batches through the 2-stage pipeline a step.
  std::string train(const std::string& name) {
    return "train " + test_util::tiny_model_flags() + " --num-layers 4 --micro-batch-size 2 --lr-warmup-samples 8 --data-path " +
           (dir / "store") + " --train-iters 4 --log-interval 1 --metrics-file " + (dir / (name + ".jsonl")) +
           " --save " + (dir / name);
  }
  std::string checkpoint(const std::string& name) { return dir / (name + "/iter_0000004/checkpoint.h5"); }
  test_util::TempDir dir;
};

TEST_F(ActivationRecompute, EveryGranularityTrainsBitwiseWhatNoRecomputeTrains) {
  struct Layout {
    std::string name, flags;
    int ranks;
  };
  struct Recompute {
    std::string name, flags;
  };
  const std::vector<Recompute> recomputes = {
      {"selective", "--recompute-granularity selective"},
      {"full_uniform1", "--recompute-granularity full"},
      {"full_uniform3", "--recompute-granularity full --recompute-method uniform --recompute-num-layers 3"},
      {"full_block1", "--recompute-granularity full --recompute-method block --recompute-num-layers 1"}};
  // Under EP the rebuilt forward passes run their all-to-alls again, on every rank alike.
  for (const Layout& l :
       {Layout{"one", "", 0}, Layout{"tp2pp2dp2", "--tp 2 --pp 2", 8}, Layout{"dp2ep2", "--ep 2", 2}}) {
    SCOPED_TRACE(l.name);
    const std::string reference = l.name + "_none";
    auto none = run_moetrain(train(reference) + " " + l.flags, l.ranks);
    ASSERT_EQ(none.status, 0) << none.output;
    const std::vector<double> expected = test_util::read_losses(dir / (reference + ".jsonl"));
    ASSERT_EQ(expected.size(), 4u);
    for (const Recompute& r : recomputes) {
      SCOPED_TRACE(r.name);
      const std::string name = l.name + "_" + r.name;
      auto run = run_moetrain(train(name) + " " + l.flags + " " + r.flags, l.ranks);
      ASSERT_EQ(run.status, 0) << run.output;
      EXPECT_EQ(test_util::read_losses(dir / (name + ".jsonl")), expected);
      test_util::expect_identical_checkpoints(checkpoint(name), checkpoint(reference));
    }
  }
}

TEST_F(ActivationRecompute, BadSettingsAreNamed) {
  auto g = run_moetrain(train("g") + " --recompute-granularity most");
  EXPECT_NE(g.status, 0);
  EXPECT_NE(g.output.find("--recompute-granularity must be none, selective or full, got 'most'"), std::string::npos)
      << g.output;
  auto m = run_moetrain(train("m") + " --recompute-granularity full --recompute-method random");
  EXPECT_NE(m.status, 0);
  EXPECT_NE(m.output.find("--recompute-method must be uniform or block, got 'random'"), std::string::npos) << m.output;
}

}  // namespace
}  // namespace mt
