// Validation while training (--valid-data-path, --eval-interval,
// --eval-iters, Megatron's flags): every interval and at the end, the loss
// over the first eval-iters x global-batch samples of the validation store,
// on the training layout, in the progress line and the metrics. It is the
// loss `moetrain eval` reports for the checkpoint saved at that step, on
// the same layout, to the bit.
#include <gtest/gtest.h>

#include <map>
#include <string>

#include "checkpoint/checkpoint_dir.h"
#include "run_moetrain.h"

namespace mt {
namespace {

using test_util::contains;
using test_util::run_moetrain;

class Validation : public ::testing::Test {
 protected:
  void SetUp() override {
    store = test_util::make_store(dir, "train", test_util::synthetic_text(150000, 9));
    valid = test_util::make_store(dir, "valid", test_util::synthetic_text(40000, 10));
  }
  // 5 steps, validations at 2, 4 and the end; progress lines every 3 steps.
  std::string train(const std::string& name, const std::string& more = "", const std::string& valid_path = "") {
    return "train " + test_util::tiny_model_flags() + " --data-path " + store + " --valid-data-path " +
           (valid_path.empty() ? valid : valid_path) +
           " --eval-interval 2 --eval-iters 2 --train-iters 5 --lr-decay-samples 96 --log-interval 3 --save-interval 2 --save " +
           (dir / name) + " --metrics-file " + (dir / (name + ".jsonl")) + " " + more;
  }
  test_util::TempDir dir;
  std::string store, valid;
};

TEST_F(Validation, EveryIntervalGivesTheLossEvalGivesForThatStepsCheckpoint) {
  struct Layout {
    std::string flags;
    int ranks;
  };
  for (const Layout& l : {Layout{"", 0}, Layout{"--tp 2 --pp 2", 4}}) {
    SCOPED_TRACE(l.flags.empty() ? "one rank" : l.flags);
    const std::string name = l.ranks ? "tp2pp2" : "one";
    const auto r = run_moetrain(train(name, l.flags), l.ranks);
    ASSERT_EQ(r.status, 0) << r.output;
    EXPECT_TRUE(contains(r.output, "validation: the first 16 samples of " + valid + " every 2 steps")) << r.output;
    EXPECT_TRUE(contains(r.output, "| valid loss ")) << r.output;

    std::map<int, double> valid_loss;  // step -> loss
    for (const auto& record : test_util::read_metrics(dir / (name + ".jsonl")))
      if (record.contains("valid_loss")) valid_loss[record["step"]] = record["valid_loss"];
    ASSERT_EQ(valid_loss.size(), 3u) << r.output;
    ASSERT_TRUE(valid_loss.count(2) && valid_loss.count(4) && valid_loss.count(5)) << r.output;
    EXPECT_LT(valid_loss[5], valid_loss[2]) << "the model did not learn";

    for (int step : {2, 4}) {
      const auto e = run_moetrain("eval --load " + (dir / (name + "/" + checkpoint_dir_name(step))) +
                                      " --data-path " + valid + " --eval-samples 16 --micro-batch-size 4 " + l.flags,
                                  l.ranks);
      ASSERT_EQ(e.status, 0) << e.output;
      const auto j = nlohmann::json::parse(e.output.substr(e.output.rfind('{')));
      EXPECT_EQ(double(j["loss"]), valid_loss[step]) << "step " << step;
    }
  }
}

TEST_F(Validation, ATooSmallOrMissingStoreIsRefusedBeforeTheFirstStep) {
  const auto small = run_moetrain(train("small", "--eval-iters 400"));
  EXPECT_NE(small.status, 0);
  EXPECT_TRUE(contains(small.output, "--valid-data-path " + valid + " holds")) << small.output;
  EXPECT_TRUE(contains(small.output, "too few for --eval-iters 400 x --global-batch-size 8 = 3200")) << small.output;
  EXPECT_FALSE(contains(small.output, "step      1")) << small.output;

  const auto missing = run_moetrain(train("missing", "", dir / "nothing"));
  EXPECT_NE(missing.status, 0);
  EXPECT_TRUE(contains(missing.output, dir / "nothing")) << missing.output;

  const auto zero = run_moetrain(train("zero", "--eval-interval 0"));
  EXPECT_NE(zero.status, 0);
  EXPECT_TRUE(contains(zero.output, "--eval-interval must be >= 1, got 0")) << zero.output;
}

}  // namespace
}  // namespace mt
