// Damaged checkpoints (docs/reliability.md), through the binary: a bit
// flipped inside a tensor of a saved checkpoint, as a failing disk or a bad
// copy would, is found by the checksums written with it. `--load SAVE` names
// the damage and resumes from the newest intact checkpoint, `--load
// SAVE/iter_N` refuses it, and `inspect --verify` names the block.
#include <gtest/gtest.h>

#include <string>

#include "checkpoint/checkpoint_dir.h"
#include "run_moetrain.h"

namespace mt {
namespace {

using test_util::contains;
using test_util::run_moetrain;

class DamagedCheckpoint : public ::testing::Test {
 protected:
  // Checkpoints of steps 2, 4 and 6 in save/.
  void SetUp() override {
    store = test_util::make_store(dir, "store", test_util::synthetic_text(100000, 8));
    const auto r = run_moetrain(train("first", 6) + " --save " + (dir / "save"));
    ASSERT_EQ(r.status, 0) << r.output;
  }
  std::string train(const std::string& name, int iters) {
    return "train " + test_util::tiny_model_flags() + " --save-interval 2 --log-interval 1 --lr-decay-samples 96 " +
           "--data-path " + store + " --train-iters " + std::to_string(iters) + " --metrics-file " +
           (dir / (name + ".jsonl"));
  }
  std::string iteration_dir(int iteration) { return dir / ("save/" + checkpoint_dir_name(iteration)); }
  std::string checkpoint(int iteration) { return iteration_dir(iteration) + "/checkpoint.h5"; }
  // The step the run logged first.
  int first_step(const std::string& name) {
    const auto records = test_util::read_metrics(dir / (name + ".jsonl"));
    return records.empty() ? -1 : int(records.front()["step"]);
  }

  test_util::TempDir dir;
  std::string store;
};

TEST_F(DamagedCheckpoint, AFlippedWeightIsNamedRefusedAndPassedOverForTheCheckpointBefore) {
  const std::string tensor = "model/layers/1/wq";
  test_util::flip_stored_byte(checkpoint(6), tensor);

  const auto bad = run_moetrain("inspect --verify " + iteration_dir(6));
  EXPECT_EQ(bad.status, 1) << bad.output;
  EXPECT_TRUE(contains(bad.output, "1 damaged block")) << bad.output;
  EXPECT_TRUE(contains(bad.output, "DAMAGED " + tensor + " block [0:")) << bad.output;
  const auto good = run_moetrain("inspect --verify " + iteration_dir(4));
  EXPECT_EQ(good.status, 0) << good.output;
  EXPECT_TRUE(contains(good.output, "datasets read back against their checksums: all intact")) << good.output;

  // Named directly: refused, with the damage named.
  const auto refused = run_moetrain(train("refused", 8) + " --load " + iteration_dir(6) + " --save " + (dir / "other"));
  EXPECT_NE(refused.status, 0) << refused.output;
  EXPECT_TRUE(contains(refused.output, "refusing checkpoint " + checkpoint(6))) << refused.output;
  EXPECT_TRUE(contains(refused.output, "'" + tensor + "' block [0:")) << refused.output;

  // Through the save directory: the damage is reported and step 4 resumed.
  const auto resumed = run_moetrain(train("resumed", 8) + " --load " + (dir / "save") + " --save " + (dir / "save"));
  ASSERT_EQ(resumed.status, 0) << resumed.output;
  EXPECT_TRUE(contains(resumed.output, "warning: " + checkpoint(6) + " is damaged")) << resumed.output;
  EXPECT_TRUE(contains(resumed.output, "resumed from " + checkpoint(4))) << resumed.output;
  EXPECT_EQ(first_step("resumed"), 5);
}

TEST_F(DamagedCheckpoint, DamagedOptimizerStateIsFoundByAResumeOnAnotherLayoutNotByEval) {
  // Under DP2 each rank reads its ZeRO-1 shard of the moments: no rank reads
  // the damaged block whole, so the check of unread blocks has to find it.
  const std::string tensor = "optim/exp_avg/layers/0/wq";
  test_util::flip_stored_byte(checkpoint(6), tensor, 0.1);
  const auto resumed =
      run_moetrain(train("resumed", 8) + " --load " + (dir / "save") + " --save " + (dir / "save2"), 2);
  ASSERT_EQ(resumed.status, 0) << resumed.output;
  EXPECT_TRUE(contains(resumed.output, "'" + tensor + "' block [0:")) << resumed.output;
  EXPECT_TRUE(contains(resumed.output, "resumed from " + checkpoint(4))) << resumed.output;
  EXPECT_EQ(first_step("resumed"), 5);

  // eval reads the weights only, which are intact.
  const auto eval = run_moetrain("eval --load " + iteration_dir(6) + " --data-path " + store +
                                 " --eval-samples 4 --micro-batch-size 2");
  EXPECT_EQ(eval.status, 0) << eval.output;
}

}  // namespace
}  // namespace mt
