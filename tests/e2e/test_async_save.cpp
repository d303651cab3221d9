// --async-save (docs/clusters.md): checkpoints written in the background
// while training goes on are, tensor for tensor, the ones synchronous saves
// write at the same steps, and training is not changed by them. A kill
// during a background save is KilledRanks'.
#include <gtest/gtest.h>

#include <string>

#include "checkpoint/checkpoint_dir.h"
#include "run_moetrain.h"
#include "same_training.h"

namespace mt {
namespace {

using test_util::run_moetrain;

TEST(AsyncSave, WritesWhatASynchronousSaveWritesAndLeavesTrainingAlone) {
  test_util::TempDir dir;
  const std::string store = test_util::make_store(dir, "store", test_util::synthetic_text(150000, 13));
  auto train = [&](const std::string& name, const std::string& flags) {
    return run_moetrain("train " + test_util::tiny_model_flags() + " --tp 2 --data-path " + store +
                            " --train-iters 6 --lr-decay-samples 96 --log-interval 1 --save-interval 2 --save " +
                            (dir / name) + " --metrics-file " + (dir / (name + ".jsonl")) + flags,
                        4);
  };
  const auto sync = train("sync", "");
  ASSERT_EQ(sync.status, 0) << sync.output;
  const auto async = train("async", " --async-save");
  ASSERT_EQ(async.status, 0) << async.output;
  for (int step : {2, 4, 6}) {
    const std::string name = checkpoint_dir_name(step);
    EXPECT_NE(async.output.find("saving checkpoint " + (dir / "async/") + name + " in the background"),
              std::string::npos)
        << async.output;
    EXPECT_NE(async.output.find("saved checkpoint " + (dir / "async/") + name + " in the background in"),
              std::string::npos)
        << async.output;
    test_util::expect_identical_checkpoints(dir / ("sync/" + name + "/checkpoint.h5"),
                                            dir / ("async/" + name + "/checkpoint.h5"));
  }
  const auto want = test_util::read_metrics(dir / "sync.jsonl"), got = test_util::read_metrics(dir / "async.jsonl");
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(got[i]["loss"], want[i]["loss"]) << "step " << i + 1;
    EXPECT_EQ(got[i]["grad_norm"], want[i]["grad_norm"]) << "step " << i + 1;
  }
  std::ifstream latest(dir / "async/latest");
  int iteration = 0;
  latest >> iteration;
  EXPECT_EQ(iteration, 6);
}

}  // namespace
}  // namespace mt
