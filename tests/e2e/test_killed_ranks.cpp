// Killed ranks (docs/reliability.md), through the binary: kill -9 of one
// rank of a PP2 x DP2 run in the middle of a step and, separately, in the
// middle of a save (synchronous, or --async-save's in the background) ends
// the job within 10 s, leaves `latest` at the newest complete checkpoint
// (intact: `inspect --verify`), and a resume from the same --save continues
// bit for bit as a run that was never killed.
#include <gtest/gtest.h>

#include <poll.h>
#include <signal.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <thread>

#include "checkpoint/checkpoint_dir.h"
#include "run_moetrain.h"
#include "same_training.h"

namespace mt {
namespace {

namespace fs = std::filesystem;
using test_util::run_moetrain;

constexpr int kRanks = 4, kVictim = 1;  // PP2 x DP2; world rank 1 is DP rank 1 of stage 0

// Lines a job has finished writing to a file (a metrics record in progress
// is not one yet).
size_t complete_lines(const std::string& path) {
  std::ifstream in(path);
  return size_t(std::count(std::istreambuf_iterator<char>(in), {}, '\n'));
}

class KilledRanks : public ::testing::Test {
 protected:
  void SetUp() override { test_util::make_store(dir, "store", test_util::synthetic_text(200000, 6)); }
  // A checkpoint every 4 steps; the learning rate decays over 96 samples
  // whatever --train-iters says, so a long run and a short one match step
  // for step.
  std::string train(const std::string& name, int iters) {
    return "train " + test_util::tiny_model_flags() + " --num-layers 4 --micro-batch-size 2 --pp 2 "
           "--lr-decay-samples 96 --save-interval 4 --log-interval 1 --data-path " + (dir / "store") +
           " --train-iters " + std::to_string(iters) + " --metrics-file " + (dir / (name + ".jsonl"));
  }
  int latest(const std::string& save) {
    std::ifstream in(dir / (save + "/latest"));
    int iteration = -1;
    in >> iteration;
    return iteration;
  }

  struct Killed {
    test_util::CommandResult run;
    double seconds_to_end = 0;  // from the kill to the job's end
  };
  // Starts a long run saving to SAVE; once `wait_for_moment` returns (given
  // the victim's pid, found after the first logged step), kills world rank
  // kVictim with SIGKILL.
  Killed kill_during(const std::string& save, const std::function<void()>& wait_for_moment,
                     const std::string& flags = "") {
    Killed k;
    std::thread job([&] { k.run = run_moetrain(train(save, 100000) + " --save " + (dir / save) + flags, kRanks); });
    int pid = -1;
    for (int i = 0; i < 6000 && pid < 0; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
      const std::string metrics = dir / (save + ".jsonl");
      if (fs::exists(metrics) && fs::file_size(metrics) > 0) pid = test_util::find_rank_pid(dir / save, kVictim);
    }
    if (pid > 0) {
      wait_for_moment();
      kill(pid, SIGKILL);
    } else {
      std::system(("pkill -9 -f " + (dir / save)).c_str());  // not to wait forever
    }
    const auto killed = std::chrono::steady_clock::now();
    job.join();
    k.seconds_to_end = std::chrono::duration<double>(std::chrono::steady_clock::now() - killed).count();
    EXPECT_GT(pid, 0) << "the job never logged a step, or rank " << kVictim << " was not found\n" << k.run.output;
    return k;
  }

  // The killed job's aftermath: it ended non-zero within 10 s, `latest`
  // names a complete checkpoint, and a resume from the same --save to step
  // 12 logs the losses of a run that was never killed and saves the same
  // checkpoint.
  void expect_resume_continues(const std::string& save, const Killed& k) {
    EXPECT_NE(k.run.status, 0) << k.run.output;
    EXPECT_LT(k.seconds_to_end, 10.0) << k.run.output;
    const int from = latest(save);
    ASSERT_GE(from, 4) << "no checkpoint before the kill\n" << k.run.output;
    ASSERT_LT(from, 12) << "the job ran past step 12 before the kill\n" << k.run.output;
    const auto verify = run_moetrain("inspect --verify " + (dir / (save + "/" + checkpoint_dir_name(from))));
    EXPECT_EQ(verify.status, 0) << "the newest complete checkpoint is damaged\n" << verify.output;
    auto straight = run_moetrain(train("straight", 12) + " --save " + (dir / "straight"), kRanks);
    ASSERT_EQ(straight.status, 0) << straight.output;
    auto resumed = run_moetrain(train(save + "_resumed", 12) + " --load " + (dir / save) + " --save " + (dir / save),
                                kRanks);
    ASSERT_EQ(resumed.status, 0) << resumed.output;
    EXPECT_NE(resumed.output.find("resumed from"), std::string::npos) << resumed.output;
    const auto want = test_util::read_metrics(dir / "straight.jsonl");
    const auto got = test_util::read_metrics(dir / (save + "_resumed.jsonl"));
    ASSERT_EQ(got.size(), size_t(12 - from)) << resumed.output;
    for (const auto& record : got) {
      const int step = record["step"];
      EXPECT_EQ(record["loss"], want.at(size_t(step - 1))["loss"]) << "step " << step;
      EXPECT_EQ(record["grad_norm"], want.at(size_t(step - 1))["grad_norm"]) << "step " << step;
    }
    test_util::expect_identical_checkpoints(dir / ("straight/" + checkpoint_dir_name(12) + "/checkpoint.h5"),
                                            dir / (save + "/" + checkpoint_dir_name(12) + "/checkpoint.h5"));
  }
  // Kills a run saving to SAVE (flags: how it saves) during the save of step 8.
  void expect_kill_mid_save_leaves_step_4(const std::string& save, const std::string& flags);
  test_util::TempDir dir;
};

TEST_F(KilledRanks, AKillMidStepEndsTheJobAndTheResumeContinuesBitForBit) {
  const std::string metrics = dir / "mid_step.jsonl";
  // After step 5 is logged: the checkpoint of step 4 is complete and the
  // ranks are inside step 6.
  const Killed k = kill_during("mid_step", [&] {
    for (int i = 0; i < 60000 && complete_lines(metrics) < 5; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
  });
  expect_resume_continues("mid_step", k);
}

// Blocks until the save of step 8 into SAVE creates its unfinished
// directory; the save then still has its whole file to write.
void wait_for_save_of_step_8(const std::string& save_dir) {
  const std::string unfinished = checkpoint_dir_name(8) + ".tmp";
  const int fd = inotify_init1(IN_CLOEXEC);
  ASSERT_GE(fd, 0);
  ASSERT_GE(inotify_add_watch(fd, save_dir.c_str(), IN_CREATE), 0);
  alignas(inotify_event) char buf[4096];
  for (bool seen = false; !seen;) {
    pollfd p{fd, POLLIN, 0};
    ASSERT_EQ(poll(&p, 1, 60000), 1) << "no save of step 8 began within 60 s";
    const ssize_t n = read(fd, buf, sizeof buf);
    for (ssize_t at = 0; at < n;) {
      const auto* e = reinterpret_cast<const inotify_event*>(buf + at);
      if (e->len && unfinished == e->name) seen = true;
      at += ssize_t(sizeof(inotify_event) + e->len);
    }
  }
  close(fd);
}

// A kill while the save of step 8 into SAVE writes its file (flags: how the
// run saves): the unfinished directory never gets the checkpoint's name,
// `latest` stays at step 4, and the resume continues bit for bit.
void KilledRanks::expect_kill_mid_save_leaves_step_4(const std::string& save, const std::string& flags) {
  const std::string save_dir = dir / save;
  const Killed k = kill_during(save, [&] { wait_for_save_of_step_8(save_dir); }, flags);
  EXPECT_TRUE(fs::exists(save_dir + "/" + checkpoint_dir_name(8) + ".tmp")) << "the save of step 8 finished before the kill";
  EXPECT_FALSE(fs::exists(save_dir + "/" + checkpoint_dir_name(8)));
  EXPECT_EQ(latest(save), 4);
  expect_resume_continues(save, k);
}

TEST_F(KilledRanks, AKillMidSaveLeavesTheCheckpointBeforeAndTheResumeContinuesBitForBit) {
  expect_kill_mid_save_leaves_step_4("mid_save", "");
}

// --async-save: the kill comes while the file of step 8 is written in the
// background and training has gone on.
TEST_F(KilledRanks, AKillDuringAnAsynchronousSaveLeavesTheCheckpointBeforeAndTheResumeContinuesBitForBit) {
  expect_kill_mid_save_leaves_step_4("async_save", " --async-save");
}

}  // namespace
}  // namespace mt
