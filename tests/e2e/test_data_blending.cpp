// Data blending through the real binary: blended sources with epochs, per-source
// accounting in the logs, the run ending when the data is used up, batch
// ramp-up, and bad data flags caught before any step.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <cmath>
#include <fstream>

#include "run_moetrain.h"

namespace mt {
namespace {

using test_util::run_moetrain;

class Blending : public ::testing::Test {
 protected:
  void SetUp() override {
    // text: 24000 tokens (with the end-of-document) = 374 samples of 64+1;
    // code: 12000 tokens = 187 samples.
    test_util::make_store(dir, "text", test_util::synthetic_text(24000, 1).substr(0, 23999));
    test_util::make_store(dir, "code", test_util::synthetic_text(12000, 2).substr(0, 11999));
  }
  std::string train() { return "train " + test_util::tiny_model_flags() + " --lr-warmup-samples 0"; }
  std::string base() { return train() + " --data-path text=" + (dir / "text") + " code=" + (dir / "code"); }
  std::vector<nlohmann::json> metrics(const std::string& path) { return test_util::read_metrics(path); }
  test_util::TempDir dir;
};

TEST_F(Blending, RunEndsCleanlyWhenTheDataIsUsedUp) {
  // 0.5 epoch of text (187) + 0.5 of code (93) = 280 samples = 35 batches of 8.
  auto r = run_moetrain(base() + " --data-epochs text=0.5 code=0.5 --train-iters 100 --log-interval 5 "
                        "--lr-decay-samples 1000 --metrics-file " + (dir / "m.jsonl") + " --save " + (dir / "ckpt"));
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("stream of 280 samples"), std::string::npos) << r.output;
  auto m = metrics(dir / "m.jsonl");
  ASSERT_FALSE(m.empty());
  EXPECT_EQ(m.back()["step"], 35);
  EXPECT_EQ(m.back()["consumed_samples"], 280);
  // Per-source accounting: each source's samples and epoch.
  EXPECT_EQ(m.back()["sources"]["text"]["samples"], 187);
  EXPECT_EQ(m.back()["sources"]["code"]["samples"], 93);
  EXPECT_NEAR(double(m.back()["sources"]["code"]["epoch"]), 93.0 / 187.0, 1e-9);
  EXPECT_NE(r.output.find("text 0.50 ep, code 0.50 ep"), std::string::npos) << r.output;
  // A checkpoint at the end, so the run can be extended later.
  EXPECT_NE(r.output.find("saved checkpoint"), std::string::npos);
}

TEST_F(Blending, DataRunsOutBeforeABatchIsFilled) {
  // 0.3 of text (112) + 0.1 of code (18) = 130 samples: 16 batches of 8, 2 left over.
  auto r = run_moetrain(base() + " --data-epochs text=0.3 code=0.1 --train-iters 100 --log-interval 100 "
                        "--lr-decay-samples 1000");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("the data is used up: 128 of 130 samples consumed"), std::string::npos) << r.output;
}

TEST_F(Blending, RampupGrowsTheBatchAndTheLogShowsIt) {
  auto r = run_moetrain(base() + " --data-epochs text=2 code=4 --global-batch-size 16 "
                        "--rampup-batch-size 4 4 48 --train-samples 160 --log-interval 1 --metrics-file " +
                        (dir / "m.jsonl"));
  ASSERT_EQ(r.status, 0) << r.output;
  auto m = metrics(dir / "m.jsonl");
  std::vector<int> batches;
  for (const auto& rec : m) batches.push_back(rec["global_batch"]);
  // 3 increments over 48 samples (one every 16): 4 x 4 reach 16, 8 x 2 reach
  // 32, 12 x 2 reach 56 > 48, then 16 x 7 reach 168 >= 160.
  const std::vector<int> expected = {4, 4, 4, 4, 8, 8, 12, 12, 16, 16, 16, 16, 16, 16, 16};
  EXPECT_EQ(batches, expected);
  EXPECT_EQ(m.back()["consumed_samples"], 168);  // the last batch may overshoot --train-samples
  // The LR is a function of the samples consumed before each step (cosine from
  // 3e-3 to 3e-4 over the run's 160 samples), whatever the batch size.
  for (const auto& rec : m) {
    const double before = double(rec["consumed_samples"]) - double(rec["global_batch"]);
    const double expected_lr = before >= 160 ? 3e-4 : 3e-4 + 0.5 * (1 + std::cos(M_PI * before / 160)) * 2.7e-3;
    EXPECT_NEAR(double(rec["lr"]), expected_lr, 1e-12) << "step " << rec["step"];
  }
  EXPECT_EQ(m[4]["global_batch_tokens"], 8 * 64);
  EXPECT_NE(r.output.find("batch 12 seq (768 tok)"), std::string::npos) << r.output;
}

TEST_F(Blending, BadDataFlagsAreCaughtBeforeAnyStep) {
  // flags: the data flags of the run, whole.
  auto expect_error = [&](const std::string& flags, const std::string& expected) {
    auto r = run_moetrain(train() + " --train-iters 2 " + flags);
    EXPECT_NE(r.status, 0) << flags;
    EXPECT_NE(r.output.find(expected), std::string::npos) << "output lacks \"" << expected << "\":\n" << r.output;
    EXPECT_EQ(r.output.find("step "), std::string::npos) << r.output;
  };
  const std::string both = " --data-path text=" + (dir / "text") + " code=" + (dir / "code");
  expect_error(both + " --data-epochs text=2 txt=4", "no source named 'txt'");
  expect_error("--data-path text=" + (dir / "text") + " text=" + (dir / "code") + " --data-epochs text=1",
               "source name 'text' is given twice");
  expect_error(both + " --data-epochs text=0 code=1", "epochs must be positive");
  expect_error(both + " --data-epochs text=-2 code=1", "epochs must be positive");
  expect_error(both + " --data-epochs text=2", "source 'code' has no epoch count");
  expect_error("--data-path text=" + (dir / "nope") + " --data-epochs text=1", "nope.idx");
  expect_error(both + " --data-epochs text=2 code=4 --rampup-batch-size 4 2 100", "batch size 6");
  test_util::make_store(dir, "short", "tiny");
  expect_error("--data-path short=" + (dir / "short") + " --data-epochs short=1", "needs at least 65 tokens");
}

}  // namespace
}  // namespace mt
