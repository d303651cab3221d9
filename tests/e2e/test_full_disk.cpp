// Full disks, on a size-limited tmpfs mounted for the test (root may mount
// one; elsewhere the tests say why they skip): a --save with too little room
// fails before the first step, and a save that runs out of space says so,
// removes its unfinished directory and leaves `latest` and the last
// complete checkpoint as they were.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "checkpoint/checkpoint_dir.h"
#include "checkpoint/checkpoint_file.h"
#include "run_moetrain.h"

namespace mt {
namespace {

namespace fs = std::filesystem;
using test_util::run_moetrain;

class FullDisk : public ::testing::Test {
 protected:
  void SetUp() override { test_util::make_store(dir, "store", test_util::synthetic_text(100000, 6)); }
  void TearDown() override {
    if (mounted_) std::system(("umount " + small()).c_str());
  }
  // Mounts a tmpfs of `kb` KiB at small(); false (and a skip) where not allowed.
  bool mount_small(int kb) {
    fs::create_directories(small());
    const std::string cmd = "mount -t tmpfs -o size=" + std::to_string(kb) + "k tmpfs " + small() + " 2>/dev/null";
    mounted_ = std::system(cmd.c_str()) == 0;
    return mounted_;
  }
  std::string small() const { return dir / "small"; }
  std::string train(int iters) {
    return "train " + test_util::tiny_model_flags() + " --lr-warmup-samples 0 --data-path " + (dir / "store") +
           " --train-iters " + std::to_string(iters) + " --log-interval 1 --metrics-file " + (dir / "m.jsonl") +
           " --save " + (dir / "small/ckpt");
  }
  test_util::TempDir dir;
  bool mounted_ = false;
};

TEST_F(FullDisk, ASaveDirectoryWithTooLittleRoomFailsBeforeTheFirstStep) {
  if (!mount_small(1024)) GTEST_SKIP() << "cannot mount a tmpfs here (needs root and mount permission)";
  auto r = run_moetrain(train(4), 2);
  EXPECT_NE(r.status, 0) << r.output;
  for (const char* part : {"--save", "MB free on its file system, a checkpoint of this model needs about", "[rank 0]",
                           "[rank 1]"})
    EXPECT_NE(r.output.find(part), std::string::npos) << "output lacks \"" << part << "\":\n" << r.output;
  EXPECT_EQ(r.output.find("step "), std::string::npos) << "a step ran:\n" << r.output;
}

TEST_F(FullDisk, ASaveThatRunsOutOfSpaceSaysSoAndKeepsTheLastCheckpoint) {
  // Room for one checkpoint and its estimate's margin, not for two.
  const uint64_t estimate = checkpoint_size_estimate(test_util::tiny_model_config());
  if (!mount_small(int(estimate * 4 / 3 / 1024))) GTEST_SKIP() << "cannot mount a tmpfs here";
  auto r = run_moetrain(train(6) + " --save-interval 2", 2);
  EXPECT_NE(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("saved checkpoint"), std::string::npos) << "the first save failed:\n" << r.output;
  for (const char* part : {"no space left on device while writing", "needed", "free", "still names the last complete"})
    EXPECT_NE(r.output.find(part), std::string::npos) << "output lacks \"" << part << "\":\n" << r.output;
  const fs::path save = dir / "small/ckpt";
  EXPECT_FALSE(fs::exists(save / (checkpoint_dir_name(4) + ".tmp"))) << "the unfinished save was left behind";
  std::ifstream latest(save / "latest");
  int64_t iteration = -1;
  latest >> iteration;
  EXPECT_EQ(iteration, 2);
  EXPECT_EQ(checkpoint_problem((save / checkpoint_dir_name(2) / "checkpoint.h5").string()), "");
}

}  // namespace
}  // namespace mt
