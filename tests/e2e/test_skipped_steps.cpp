// Steps that must not update the model (training/step_guard.h), through the
// binary on 2 data-parallel ranks: a non-finite gradient on one rank skips
// the step on both, exactly as stepping over its batch does; a run of skips
// stops the run naming them; a gradient-norm spike is skipped only when
// asked, and the spike statistics survive a resume.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "checkpoint/checkpoint_dir.h"
#include "run_moetrain.h"
#include "checkpoint/hdf5_file.h"
#include "same_training.h"

namespace mt {
namespace {

using test_util::run_moetrain;

class SkippedSteps : public ::testing::Test {
 protected:
  void SetUp() override { test_util::make_store(dir, "store", test_util::synthetic_text(200000, 5)); }
  // DP 2: each rank holds one micro-batch of 4 of the global batch of 8.
  std::string train(const std::string& name, int iters) {
    return "train " + test_util::tiny_model_flags() + " --lr-warmup-samples 16 --lr-decay-samples 400 --data-path " +
           (dir / "store") + " --train-iters " + std::to_string(iters) + " --log-interval 1 --metrics-file " +
           (dir / (name + ".jsonl")) + " --save " + (dir / name);
  }
  std::string ckpt(const std::string& name, int iteration) {
    return dir / (name + "/" + checkpoint_dir_name(iteration) + "/checkpoint.h5");
  }
  test_util::TempDir dir;
};

TEST_F(SkippedSteps, ANonFiniteGradientOnOneRankSkipsTheStepEverywhereAsSteppingOverItsBatchDoes) {
  auto r = run_moetrain(train("nan", 6) + " --debug-nan-at-iteration 3 --debug-fail-rank 1", 2);
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("skipped step 3: the gradient norm is nan; its batch, samples [16, 24)"), std::string::npos)
      << r.output;
  const auto metrics = test_util::read_metrics(dir / "nan.jsonl");
  ASSERT_EQ(metrics.size(), 6u);
  for (const auto& m : metrics) EXPECT_EQ(m["skipped_steps"], m["step"] == 3 ? 1 : 0) << m.dump();
  EXPECT_TRUE(metrics[2]["loss"].is_null());  // no updated step in that interval
  {
    H5File f = H5File::open(ckpt("nan", 6), MPI_COMM_SELF);
    EXPECT_EQ(f.attr_int("adam_step"), 5);  // the skipped step is not counted
    EXPECT_EQ(f.attr_int("iteration"), 6);
    EXPECT_EQ(f.attr_int("consumed_samples"), 48);
  }
  const std::string skipped = dir / "nan/skipped_steps.jsonl";
  std::ifstream in(skipped);
  std::string line;
  ASSERT_TRUE(std::getline(in, line)) << skipped;
  const auto record = nlohmann::json::parse(line);
  EXPECT_EQ(record["iteration"], 3);
  EXPECT_EQ(record["consumed_samples"], 16);
  EXPECT_TRUE(record["grad_norm"].is_null());

  // A fresh run told to step over that batch trains the same weights and
  // moments, bit for bit: a skip is exactly no update and a consumed batch.
  auto over = run_moetrain(train("over", 6) + " --skip-steps-file " + skipped, 2);
  ASSERT_EQ(over.status, 0) << over.output;
  EXPECT_NE(over.output.find("skipped step 3: --skip-steps-file lists it"), std::string::npos) << over.output;
  test_util::expect_identical_checkpoints(ckpt("over", 6), ckpt("nan", 6));
  const auto over_metrics = test_util::read_metrics(dir / "over.jsonl");
  ASSERT_EQ(over_metrics.size(), metrics.size());
  for (size_t i = 0; i < metrics.size(); ++i) EXPECT_EQ(over_metrics[i]["loss"], metrics[i]["loss"]) << "step " << i + 1;
}

TEST_F(SkippedSteps, ARunOfSkipsStopsEveryRankNamingTheSteps) {
  auto r = run_moetrain(train("run", 8) + " --debug-nan-at-iteration 2 --debug-nan-iterations 5 --debug-fail-rank 0 "
                                          "--max-consecutive-skips 3",
                        2);
  EXPECT_NE(r.status, 0) << r.output;
  for (const char* part : {"3 steps in a row were skipped (iterations 2, 3, 4", "--max-consecutive-skips 3",
                           "skipped_steps.jsonl"})
    EXPECT_NE(r.output.find(part), std::string::npos) << "output lacks \"" << part << "\":\n" << r.output;
  EXPECT_EQ(r.output.find("step      5/8"), std::string::npos) << r.output;
}

TEST_F(SkippedSteps, ASpikeIsSkippedOnlyWhenAskedAndTheStatisticsSurviveAResume) {
  // Without --skip-spike-zscore a 1000x gradient is clipped, not skipped.
  auto plain = run_moetrain(train("plain", 16) + " --debug-spike-at-iteration 14 --debug-fail-rank 1", 2);
  ASSERT_EQ(plain.status, 0) << plain.output;
  EXPECT_EQ(plain.output.find("skipped step"), std::string::npos) << plain.output;

  const std::string spike = " --skip-spike-zscore 6 --debug-spike-at-iteration 14 --debug-fail-rank 1";
  auto straight = run_moetrain(train("straight", 16) + spike, 2);
  ASSERT_EQ(straight.status, 0) << straight.output;
  EXPECT_NE(straight.output.find("skipped step 14: the gradient norm"), std::string::npos) << straight.output;
  EXPECT_NE(straight.output.find("standard deviations above the mean"), std::string::npos) << straight.output;
  size_t skips = 0;
  for (size_t at = straight.output.find("skipped step "); at != std::string::npos;
       at = straight.output.find("skipped step ", at + 1))
    ++skips;
  EXPECT_EQ(skips, 1u) << "an ordinary step was skipped:\n" << straight.output;

  // Stopped at 12 and resumed: the window of norms comes back from the
  // checkpoint, so step 14 is judged as in the run that never stopped.
  auto first = run_moetrain(train("stopped", 12) + spike, 2);
  ASSERT_EQ(first.status, 0) << first.output;
  auto second = run_moetrain(train("resumed", 16) + spike + " --load " + (dir / "stopped"), 2);
  ASSERT_EQ(second.status, 0) << second.output;
  EXPECT_NE(second.output.find("skipped step 14"), std::string::npos) << second.output;
  test_util::expect_identical_checkpoints(ckpt("resumed", 16), ckpt("straight", 16));
}

}  // namespace
}  // namespace mt
