// No silent hangs (runtime/watchdog.h), through the binary: a rank stopped
// with SIGSTOP in the middle of a TP2 x PP2 run makes the job end within a
// minute of a 0.5-minute --distributed-timeout-minutes, the ranks waiting
// for it naming it; a run whose ranks all keep working never trips a short
// timeout.
#include <gtest/gtest.h>

#include <signal.h>

#include <chrono>
#include <filesystem>
#include <thread>

#include "run_moetrain.h"

namespace mt {
namespace {

namespace fs = std::filesystem;
using test_util::find_rank_pid;
using test_util::run_moetrain;

class Watchdog : public ::testing::Test {
 protected:
  void SetUp() override { test_util::make_store(dir, "store", test_util::synthetic_text(200000, 4)); }
  std::string train(const std::string& name, int iters) {
    return "train " + test_util::tiny_model_flags() + " --num-layers 4 --micro-batch-size 2 --lr-warmup-samples 8 "
           "--data-path " + (dir / "store") + " --train-iters " + std::to_string(iters) +
           " --log-interval 1 --metrics-file " + (dir / (name + ".jsonl"));
  }
  test_util::TempDir dir;
};

TEST_F(Watchdog, AStoppedRankIsNamedAndTheJobEndsWithinAMinute) {
  const std::string metrics = dir / "hang.jsonl";
  test_util::CommandResult r;
  std::thread job([&] {
    r = run_moetrain(train("hang", 100000) + " --tp 2 --pp 2 --distributed-timeout-minutes 0.5", 4);
  });
  // Once the job has logged a step, stop world rank 3 (TP rank 1 of the
  // last stage).
  int pid = -1;
  for (int i = 0; i < 600 && pid < 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    if (fs::exists(metrics) && fs::file_size(metrics) > 0) pid = find_rank_pid(dir.path(), 3);
  }
  ASSERT_GT(pid, 0) << "the job never logged a step, or rank 3 was not found";
  ASSERT_EQ(kill(pid, SIGSTOP), 0);
  const auto stopped = std::chrono::steady_clock::now();
  job.join();
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - stopped).count();
  kill(pid, SIGKILL);  // in case the launcher left it behind
  EXPECT_NE(r.status, 0) << r.output;
  EXPECT_LT(seconds, 60.0) << r.output;
  EXPECT_NE(r.output.find("no progress for"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("--distributed-timeout-minutes 0.5"), std::string::npos) << r.output;
  // Rank 3's neighbours name it: its TP partner (rank 2) waits with it in
  // a TP group, its pipeline peer (rank 1) in a transfer with world rank 3.
  EXPECT_TRUE(r.output.find("(world rank 3)") != std::string::npos ||
              r.output.find("world ranks 2, 3)") != std::string::npos)
      << r.output;
}

TEST_F(Watchdog, RanksThatKeepWorkingNeverTripAShortTimeout) {
  auto r = run_moetrain(train("live", 12) + " --pp 2 --distributed-timeout-minutes 0.1 --save " + (dir / "ckpt") +
                            " --save-interval 4",
                        2);
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(r.output.find("no progress"), std::string::npos) << r.output;
  EXPECT_EQ(test_util::read_metrics(dir / "live.jsonl").size(), 12u);
}

}  // namespace
}  // namespace mt
