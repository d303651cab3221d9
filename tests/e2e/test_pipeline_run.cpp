// Pipeline parallelism through the real binary under mpirun: the same
// losses and checkpoint as one rank, clear split errors, and a failure on
// one stage ending the whole job instead of leaving the others waiting.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>

#include "run_moetrain.h"
#include "checkpoint/hdf5_file.h"
#include "same_training.h"

namespace mt {
namespace {

using test_util::run_moetrain;

class PipelineRun : public ::testing::Test {
 protected:
  void SetUp() override {
    test_util::make_store(dir, "store", test_util::synthetic_text(40000, 6));
  }
  // 4 layers, 4 micro-batches a step.
  std::string train(const std::string& name) {
    return "train " + test_util::tiny_model_flags() + " --num-layers 4 --micro-batch-size 2 --lr-warmup-samples 0 " +
           "--data-path " + (dir / "store") + " --train-iters 5 --log-interval 1 --metrics-file " +
           (dir / (name + ".jsonl")) + " --save " + (dir / name);
  }
  test_util::BinaryRun run(const std::string& name) {
    return {dir / (name + ".jsonl"), dir / (name + "/iter_0000005/checkpoint.h5")};
  }
  test_util::TempDir dir;
};

TEST_F(PipelineRun, StagesTrainAndSaveWhatOneRankDoes) {
  auto one = run_moetrain(train("one"));
  ASSERT_EQ(one.status, 0) << one.output;
  auto perturbed = run_moetrain(train("perturbed") + test_util::perturbed_flags());
  ASSERT_EQ(perturbed.status, 0) << perturbed.output;
  struct Layout {
    std::string name, flags;
    int ranks, tp;
  };
  for (const Layout& l : {Layout{"pp2", "--pp 2", 2, 1}, Layout{"pp4_gpipe", "--pp 4 --pipeline-schedule gpipe", 4, 1},
                          Layout{"pp2_uneven", "--pp 2 --decoder-first-pipeline-num-layers 1", 2, 1},
                          Layout{"tp2pp2", "--tp 2 --pp 2", 4, 2}}) {
    SCOPED_TRACE(l.name);
    auto r = run_moetrain(train(l.name) + " " + l.flags, l.ranks);
    ASSERT_EQ(r.status, 0) << r.output;
    EXPECT_NE(r.output.find("idle per stage"), std::string::npos) << r.output;
    ASSERT_EQ(test_util::read_metrics(dir / (l.name + ".jsonl")).size(), 5u);
    // Every stage wrote its layers into the one file.
    test_util::expect_same_training(run(l.name), run("one"), run("perturbed"), l.tp,
                                    {"model/embed", "model/layers/0/wq", "model/layers/3/experts/w2",
                                     "model/lm_head", "optim/exp_avg_sq/layers/2/wo"});
  }
}

TEST_F(PipelineRun, SplitsThatCannotBeMadeAreNamed) {
  auto r = run_moetrain(train("odd") + " --pp 2 --num-layers 3", 2);
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("--num-layers 3 does not split evenly over 2 pipeline stages"), std::string::npos) << r.output;
  auto s = run_moetrain(train("sched") + " --pipeline-schedule interleaved");
  EXPECT_NE(s.status, 0);
  EXPECT_NE(s.output.find("--pipeline-schedule must be 1f1b or gpipe"), std::string::npos) << s.output;
}

TEST_F(PipelineRun, AFailureOnOneStageAbortsTheWholeJobWithinSeconds) {
  const auto start = std::chrono::steady_clock::now();
  // Rank 2 (stage 2 of 4) fails at the start of step 3; the others are then
  // blocked waiting for its activations or gradients.
  auto r = run_moetrain(train("fail") + " --pp 4 --debug-fail-at-iteration 3 --debug-fail-rank 2", 4);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("[rank 2]"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("injected failure at iteration 3 on rank 2"), std::string::npos) << r.output;
  EXPECT_LT(seconds, 30.0) << "the job took " << seconds << " s to end";
}

}  // namespace
}  // namespace mt
