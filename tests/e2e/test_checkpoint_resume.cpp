// Checkpoints as users meet them, through the real binary: exact
// resume on the same layout (1 rank and TP2 x PP2 x DP2), moving between
// TP2 x PP2 x DP2 and other layouts in both directions, and between
// expert-parallel sizes and across sequence parallelism, --load falling back past unfinished, truncated and corrupted
// checkpoints, --keep-last, the root attributes, and SIGTERM / SIGUSR1
// making the job save and stop cleanly.
#include <gtest/gtest.h>

#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <thread>

#include "checkpoint/checkpoint_dir.h"
#include "checkpoint/checkpoint_file.h"
#include "run_moetrain.h"
#include "checkpoint/hdf5_file.h"
#include "same_training.h"

namespace mt {
namespace {

namespace fs = std::filesystem;
using test_util::run_moetrain;

class CheckpointResume : public ::testing::Test {
 protected:
  void SetUp() override { test_util::make_store(dir, "store", test_util::synthetic_text(200000, 9)); }
  // 4 layers (so PP can be 4), micro-batch 2, global batch 8: DP2 replicas
  // accumulate 2 micro-batches. The LR decays over 64 samples whatever the
  // number of iterations asked for, so stopped and straight runs match.
  std::string train(const std::string& metrics) {
    return "train " + test_util::tiny_model_flags() +
           " --num-layers 4 --micro-batch-size 2 --lr-decay-samples 64 --log-interval 1 --data-path " +
           (dir / "store") + " --metrics-file " + (dir / (metrics + ".jsonl"));
  }
  std::vector<double> losses(const std::string& metrics) { return test_util::read_losses(dir / (metrics + ".jsonl")); }
  std::string ckpt(const std::string& save, int iteration) {
    return dir / (save + "/" + checkpoint_dir_name(iteration) + "/checkpoint.h5");
  }
  test_util::TempDir dir;
};

TEST_F(CheckpointResume, StoppingAndResumingIsBitIdenticalToNotStopping) {
  struct Layout {
    std::string name, flags;
    int ranks;
  };
  // bf16 too: the checkpoint's float32 master weights give back the bf16
  // weights they were rounded into.
  for (const Layout& l : {Layout{"one", "", 0}, Layout{"tp2pp2dp2", "--tp 2 --pp 2", 8}, Layout{"one_bf16", "--bf16", 0},
                          Layout{"tp2pp2dp2_bf16", "--tp 2 --pp 2 --bf16", 8}}) {
    SCOPED_TRACE(l.name);
    const std::string straight = l.name + "_straight", first = l.name + "_first", second = l.name + "_second";
    auto s = run_moetrain(train(straight) + " --train-iters 8 --save " + (dir / straight) + " " + l.flags, l.ranks);
    ASSERT_EQ(s.status, 0) << s.output;
    auto a = run_moetrain(train(first) + " --train-iters 4 --save " + (dir / first) + " " + l.flags, l.ranks);
    ASSERT_EQ(a.status, 0) << a.output;
    auto b = run_moetrain(train(second) + " --train-iters 8 --load " + (dir / first) + " --save " + (dir / first) +
                              " " + l.flags,
                          l.ranks);
    ASSERT_EQ(b.status, 0) << b.output;
    EXPECT_EQ(b.output.find("warning"), std::string::npos) << b.output;
    std::vector<double> stopped = losses(first);
    for (double x : losses(second)) stopped.push_back(x);
    const std::vector<double> expected = losses(straight);
    ASSERT_EQ(stopped.size(), 8u);
    for (size_t i = 0; i < 8; ++i) EXPECT_EQ(stopped[i], expected[i]) << "step " << i + 1;
    test_util::expect_identical_checkpoints(ckpt(straight, 8), ckpt(first, 8));
  }
}

// Checkpoints hold float32 weights in both precisions: a bf16 run resumes
// in float32 and the reverse, from the step where the other stopped.
TEST_F(CheckpointResume, Bf16AndFloat32ResumeEachOther) {
  for (const auto& [from, to] : {std::pair{"--bf16", ""}, std::pair{"", "--bf16"}}) {
    SCOPED_TRACE(std::string("from '") + from + "' to '" + to + "'");
    const std::string first = std::string("first") + from, second = std::string("second") + from;
    auto a = run_moetrain(train(first) + " --train-iters 4 --save " + (dir / first) + " " + from);
    ASSERT_EQ(a.status, 0) << a.output;
    auto b = run_moetrain(train(second) + " --train-iters 8 --load " + (dir / first) + " " + to);
    ASSERT_EQ(b.status, 0) << b.output;
    const auto records = test_util::read_metrics(dir / (second + ".jsonl"));
    ASSERT_EQ(records.size(), 4u);
    EXPECT_EQ(records.front()["step"], 5);
    EXPECT_LT(records.back()["loss"].get<double>(), losses(first).front());
  }
}

// Both directions: TP2 x PP2 x DP2 -> each other layout, and each other
// layout -> TP2 x PP2 x DP2; every resumed run continues with the losses of
// a TP2 x PP2 x DP2 run that never stopped.
TEST_F(CheckpointResume, CheckpointsMoveBetweenTp2Pp2Dp2AndOtherLayouts) {
  const std::string tp2pp2dp2 = "--tp 2 --pp 2";
  auto s = run_moetrain(train("straight") + " --train-iters 8 --save " + (dir / "straight") + " " + tp2pp2dp2, 8);
  ASSERT_EQ(s.status, 0) << s.output;
  auto a = run_moetrain(train("first") + " --train-iters 4 --save " + (dir / "first") + " " + tp2pp2dp2, 8);
  ASSERT_EQ(a.status, 0) << a.output;
  auto p = run_moetrain(train("perturbed") + " --train-iters 8 --save " + (dir / "perturbed") + " " + tp2pp2dp2 +
                            test_util::perturbed_flags(),
                        8);
  ASSERT_EQ(p.status, 0) << p.output;
  // Steps 5 to 8 of the resumed run against those of the run that never
  // stopped; largest_group: the most ranks a sum was split over, in either layout.
  auto expect_continues = [&](const std::string& name, const std::string& save, int largest_group) {
    ASSERT_EQ(test_util::read_metrics(dir / (name + ".jsonl")).size(), 4u);
    test_util::expect_same_training({dir / (name + ".jsonl"), ckpt(save, 8)},
                                    {dir / "straight.jsonl", ckpt("straight", 8)},
                                    {dir / "perturbed.jsonl", ckpt("perturbed", 8)}, largest_group,
                                    {"model/embed", "model/layers/0/wk", "model/layers/3/experts/w1",
                                     "model/layers/2/router", "model/lm_head", "optim/exp_avg/layers/1/wo",
                                     "optim/exp_avg_sq/layers/3/experts/w2"},
                                    4);
  };
  struct Layout {
    std::string name, flags;
    int ranks, largest_group;
  };
  for (const Layout& l : {Layout{"one", "", 0, 2}, Layout{"tp1pp4", "--pp 4", 4, 2}, Layout{"tp4pp1", "--tp 4", 4, 4}}) {
    SCOPED_TRACE(l.name);
    // From TP2 x PP2 x DP2 to this layout.
    const std::string to = "to_" + l.name;
    auto r = run_moetrain(train(to) + " --train-iters 8 --load " + (dir / "first") + " --save " + (dir / to) + " " +
                              l.flags,
                          l.ranks);
    ASSERT_EQ(r.status, 0) << r.output;
    EXPECT_NE(r.output.find("resumed from"), std::string::npos) << r.output;
    expect_continues(to, to, l.largest_group);
    // From this layout to TP2 x PP2 x DP2.
    const std::string from = "from_" + l.name;
    auto f = run_moetrain(train(from + "_first") + " --train-iters 4 --save " + (dir / from) + " " + l.flags, l.ranks);
    ASSERT_EQ(f.status, 0) << f.output;
    auto b = run_moetrain(train(from) + " --train-iters 8 --load " + (dir / from) + " --save " + (dir / from) + " " +
                              tp2pp2dp2,
                          8);
    ASSERT_EQ(b.status, 0) << b.output;
    expect_continues(from, from, l.largest_group);
  }
}

// Experts by global index: a run saved at EP = 2 (DP 4 = EP 2 x expert-DP 2)
// resumes at EP = 1 and EP = 4, and runs saved there resume at EP = 2, each
// continuing with the losses of an EP = 2 run that never stopped, with the
// same experts' weights and both Adam moments at the end.
TEST_F(CheckpointResume, CheckpointsMoveBetweenExpertParallelSizes) {
  const std::string ep2 = "--ep 2";
  for (const std::string run : {"straight", "first", "perturbed"}) {
    auto r = run_moetrain(train(run) + " --train-iters " + (run == "first" ? "4" : "8") + " --save " + (dir / run) +
                              " " + ep2 + (run == "perturbed" ? test_util::perturbed_flags() : ""),
                          4);
    ASSERT_EQ(r.status, 0) << r.output;
    EXPECT_NE(r.output.find("experts EP=2 x expert-DP=2"), std::string::npos) << r.output;
  }
  auto expect_continues = [&](const std::string& name) {
    ASSERT_EQ(test_util::read_metrics(dir / (name + ".jsonl")).size(), 4u);
    test_util::expect_same_training({dir / (name + ".jsonl"), ckpt(name, 8)},
                                    {dir / "straight.jsonl", ckpt("straight", 8)},
                                    {dir / "perturbed.jsonl", ckpt("perturbed", 8)}, 4,
                                    {"model/layers/0/experts/w1", "model/layers/3/experts/w2", "model/layers/2/router",
                                     "optim/exp_avg/layers/1/experts/w1", "optim/exp_avg_sq/layers/3/experts/w2",
                                     "optim/exp_avg_sq/layers/0/experts/w2", "model/embed"},
                                    4);
  };
  for (const std::string ep : {"1", "4"}) {
    SCOPED_TRACE("EP " + ep);
    const std::string to = "to_ep" + ep, from = "from_ep" + ep;
    auto r = run_moetrain(train(to) + " --train-iters 8 --load " + (dir / "first") + " --save " + (dir / to) +
                              " --ep " + ep,
                          4);
    ASSERT_EQ(r.status, 0) << r.output;
    EXPECT_NE(r.output.find("resumed from"), std::string::npos) << r.output;
    expect_continues(to);
    auto f = run_moetrain(train(from + "_first") + " --train-iters 4 --save " + (dir / from) + " --ep " + ep, 4);
    ASSERT_EQ(f.status, 0) << f.output;
    auto b = run_moetrain(train(from) + " --train-iters 8 --load " + (dir / from) + " --save " + (dir / from) + " " +
                              ep2,
                          4);
    ASSERT_EQ(b.status, 0) << b.output;
    expect_continues(from);
  }
}

// Sequence parallelism changes how activations are split, not one tensor:
// a TP 2 run saved with it resumes without it and the reverse, each
// continuing with the losses of a run with it that never stopped.
TEST_F(CheckpointResume, CheckpointsMoveAcrossSequenceParallelism) {
  const std::string sp = "--tp 2 --sequence-parallel";
  for (const std::string run : {"straight", "first", "perturbed"}) {
    auto r = run_moetrain(train(run) + " --train-iters " + (run == "first" ? "4" : "8") + " --save " + (dir / run) +
                              " " + sp + (run == "perturbed" ? test_util::perturbed_flags() : ""),
                          2);
    ASSERT_EQ(r.status, 0) << r.output;
  }
  auto expect_continues = [&](const std::string& name) {
    ASSERT_EQ(test_util::read_metrics(dir / (name + ".jsonl")).size(), 4u);
    test_util::expect_same_training({dir / (name + ".jsonl"), ckpt(name, 8)},
                                    {dir / "straight.jsonl", ckpt("straight", 8)},
                                    {dir / "perturbed.jsonl", ckpt("perturbed", 8)}, 2,
                                    {"model/layers/0/attn_norm", "model/layers/3/mlp_norm", "model/final_norm",
                                     "model/layers/2/router", "optim/exp_avg/layers/1/wo",
                                     "optim/exp_avg_sq/layers/0/attn_norm", "model/embed"},
                                    4);
  };
  auto to = run_moetrain(train("to_tp2") + " --train-iters 8 --load " + (dir / "first") + " --save " +
                             (dir / "to_tp2") + " --tp 2",
                         2);
  ASSERT_EQ(to.status, 0) << to.output;
  expect_continues("to_tp2");
  auto f = run_moetrain(train("from_tp2_first") + " --train-iters 4 --save " + (dir / "from_tp2") + " --tp 2", 2);
  ASSERT_EQ(f.status, 0) << f.output;
  auto b = run_moetrain(
      train("from_tp2") + " --train-iters 8 --load " + (dir / "from_tp2") + " --save " + (dir / "from_tp2") + " " + sp,
      2);
  ASSERT_EQ(b.status, 0) << b.output;
  expect_continues("from_tp2");
}

// What routing keeps between steps (the expert bias, global_aux_loss's
// shares) resumes bit for bit on the same layout and moves between one rank
// and PP2 x DP2 split EP2, in a DeepSeek-style model (docs/design.md
// section 3): the resumed runs continue the one-rank run that never stopped,
// the bias equal at every step while routing is.
TEST_F(CheckpointResume, RouterStateResumesBitForBitAndAcrossLayouts) {
  const std::string design =
      " --swiglu --moe-ffn-hidden-size 64 --moe-layer-freq '[0]+[1]*3' --moe-shared-expert-intermediate-size 64"
      " --moe-router-score-function sigmoid --moe-router-enable-expert-bias --moe-router-bias-update-rate 0.01"
      " --moe-router-num-groups 2 --moe-router-group-topk 1 --moe-router-load-balancing-type global_aux_loss"
      " --qk-layernorm",
                    split = " --pp 2 --ep 2";
  auto run = [&](const std::string& name, int iters, const std::string& flags, int ranks) {
    auto r = run_moetrain(train(name) + design + " --train-iters " + std::to_string(iters) + " --save " +
                              (dir / name) + flags,
                          ranks);
    EXPECT_EQ(r.status, 0) << r.output;
    return r.output;
  };
  run("straight", 8, "", 0);
  run("first", 4, "", 0);
  run("perturbed", 8, test_util::perturbed_flags(), 0);
  run("split_first", 4, split, 4);
  const std::string resumed = run("second", 8, " --load " + (dir / "first"), 0);
  EXPECT_NE(resumed.find("resumed from"), std::string::npos) << resumed;
  std::vector<double> stopped = losses("first");
  for (double x : losses("second")) stopped.push_back(x);
  EXPECT_EQ(stopped, losses("straight"));
  test_util::expect_identical_checkpoints(ckpt("straight", 8), ckpt("second", 8));
  std::string biases;  // every logged step's
  for (const auto& record : test_util::read_metrics(dir / "straight.jsonl"))
    biases += record.at("experts").at("bias").dump();
  EXPECT_NE(biases.find_first_of("123456789"), std::string::npos) << "the bias never moved: " << biases;

  run("to_split", 8, " --load " + (dir / "first") + split, 4);
  run("from_split", 8, " --load " + (dir / "split_first"), 0);
  const std::vector<std::string> tensors = {"model/layers/0/mlp/w3", "model/layers/1/experts/w3",
                                            "model/layers/2/shared_expert/w1", "model/layers/3/q_norm",
                                            "model/layers/1/expert_bias", "model/layers/3/global_aux_share"};
  for (const std::string name : {"to_split", "from_split"}) {
    SCOPED_TRACE(name);
    test_util::expect_same_training({dir / (name + ".jsonl"), ckpt(name, 8)},
                                    {dir / "straight.jsonl", ckpt("straight", 8)},
                                    {dir / "perturbed.jsonl", ckpt("perturbed", 8)}, 2, tensors, 4);
  }
}

TEST_F(CheckpointResume, LoadSkipsUnfinishedTruncatedAndCorruptedCheckpoints) {
  auto a = run_moetrain(train("a") + " --train-iters 6 --save-interval 2 --save " + (dir / "ck"));
  ASSERT_EQ(a.status, 0) << a.output;
  // A save that died before `latest` moved: the directory exists, latest says 6.
  fs::create_directories(dir / "ck/iter_0000008");
  fs::copy_file(ckpt("ck", 6), ckpt("ck", 8));
  // Iteration 6 truncated, iteration 4 with its superblock overwritten.
  fs::resize_file(ckpt("ck", 6), fs::file_size(ckpt("ck", 6)) / 2);
  {
    std::fstream f(ckpt("ck", 4), std::ios::in | std::ios::out | std::ios::binary);
    const std::string junk(64, 'x');
    f.write(junk.data(), std::streamsize(junk.size()));
  }
  auto r = run_moetrain(train("b") + " --train-iters 3 --load " + (dir / "ck"));
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("iter_0000008/checkpoint.h5 is newer than 'latest' (6)"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("iter_0000006/checkpoint.h5 cannot be resumed from"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("iter_0000004/checkpoint.h5 cannot be resumed from"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("resumed from " + ckpt("ck", 2) + " at iteration 2"), std::string::npos) << r.output;

  // A checkpoint asked for by name is used or refused, never replaced.
  auto named = run_moetrain(train("c") + " --train-iters 3 --load " + (dir / "ck/iter_0000006"));
  EXPECT_NE(named.status, 0);
  EXPECT_NE(named.output.find("iter_0000006/checkpoint.h5"), std::string::npos) << named.output;
  auto good = run_moetrain(train("d") + " --train-iters 3 --load " + (dir / "ck/iter_0000002"));
  ASSERT_EQ(good.status, 0) << good.output;
  EXPECT_NE(good.output.find("at iteration 2"), std::string::npos) << good.output;

  // Nothing complete left: a clear error on every rank.
  fs::remove_all(dir / "ck/iter_0000002");
  auto none = run_moetrain(train("e") + " --train-iters 3 --load " + (dir / "ck"), 2);
  EXPECT_NE(none.status, 0);
  EXPECT_NE(none.output.find("no complete checkpoint at or before iteration 6"), std::string::npos) << none.output;
}

TEST_F(CheckpointResume, KeepLastRemovesOnlyOlderCompleteCheckpoints) {
  auto r = run_moetrain(train("k") + " --train-iters 5 --save-interval 1 --keep-last 2 --save " + (dir / "ck"), 2);
  ASSERT_EQ(r.status, 0) << r.output;
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir / "ck")) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"iter_0000004", "iter_0000005", "latest"}));
  // A directory beyond `latest` (an unfinished save of an earlier attempt)
  // never displaces the checkpoints just written.
  fs::create_directories(dir / "ck/iter_0000009");
  auto resumed = run_moetrain(train("k3") + " --train-iters 7 --save-interval 1 --keep-last 2 --load " +
                                  (dir / "ck") + " --save " + (dir / "ck"));
  ASSERT_EQ(resumed.status, 0) << resumed.output;
  names.clear();
  for (const auto& e : fs::directory_iterator(dir / "ck")) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"iter_0000006", "iter_0000007", "iter_0000009", "latest"}));
  auto bad = run_moetrain(train("k2") + " --train-iters 1 --keep-last 2");
  EXPECT_NE(bad.status, 0);
  EXPECT_NE(bad.output.find("--keep-last 2 needs --save DIR"), std::string::npos) << bad.output;
}

TEST_F(CheckpointResume, RootAttributesHoldEverythingNeededToContinue) {
  auto r = run_moetrain(train("attrs") + " --rampup-batch-size 4 4 16 --train-iters 5 --save " + (dir / "ck"), 2);
  ASSERT_EQ(r.status, 0) << r.output;
  H5File f = H5File::open(ckpt("ck", 5), MPI_COMM_SELF);
  EXPECT_EQ(f.attr_int("format_version"), kCheckpointFormatVersion);
  EXPECT_EQ(f.attr_int("iteration"), 5);
  EXPECT_EQ(f.attr_int("consumed_samples"), 4 * 4 + 8);  // batches of 4 until 16 samples, then 8
  EXPECT_EQ(f.attr_int("consumed_tokens"), 24 * 64);
  EXPECT_EQ(f.attr_int("adam_step"), 5);
  EXPECT_EQ(f.attr_int("seed"), 7);
  const auto layout = nlohmann::json::parse(f.attr_string("layout"));
  EXPECT_EQ(layout["dp"], 2);
  EXPECT_EQ(layout["world"], 2);
  const auto rampup = nlohmann::json::parse(f.attr_string("rampup"));
  EXPECT_EQ(rampup["global_batch"], 8);
  const auto lr = nlohmann::json::parse(f.attr_string("lr_schedule"));
  EXPECT_EQ(lr["consumed_samples"], 24);
  EXPECT_GT(lr["lr"].get<double>(), 0.0);
  const auto data = nlohmann::json::parse(f.attr_string("data"));
  ASSERT_EQ(data["sources"].size(), 1u) << data.dump();
  EXPECT_EQ(data["sources"].begin().value()["samples"], 24) << data.dump();
  EXPECT_EQ(nlohmann::json::parse(f.attr_string("rng"))["seed"], 7);
  const auto config = nlohmann::json::parse(f.attr_string("config"));
  EXPECT_EQ(config["model"]["num_layers"], 4);
  EXPECT_EQ(config["global_batch_size"], 8);
}

// The pid of a `moetrain` process whose command line mentions `marker`
// (not mpirun's), or -1.
pid_t find_rank(const std::string& marker) {
  for (const auto& e : fs::directory_iterator("/proc")) {
    const std::string name = e.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream comm(e.path() / "comm"), cmdline(e.path() / "cmdline");
    std::string c, args((std::istreambuf_iterator<char>(cmdline)), std::istreambuf_iterator<char>());
    std::getline(comm, c);
    if (c == "moetrain" && args.find(marker) != std::string::npos) return pid_t(std::stol(name));
  }
  return -1;
}

TEST_F(CheckpointResume, SigtermOrSigusr1SavesAtTheNextStepAndExitsCleanly) {
  for (int sig : {SIGTERM, SIGUSR1}) {
    const std::string name = sig == SIGTERM ? "term" : "usr1", save = dir / name, metrics = dir / (name + ".jsonl");
    // One rank of two gets the signal (as if only it were told); both stop.
    std::thread signaller([&] {
      for (int i = 0; i < 600; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        if (fs::exists(metrics) && fs::file_size(metrics) > 0) {
          const pid_t pid = find_rank(save);
          if (pid > 0) {
            kill(pid, sig);
            return;
          }
        }
      }
    });
    auto r = run_moetrain(train(name) + " --train-iters 3000 --save " + save, 2);
    signaller.join();
    ASSERT_EQ(r.status, 0) << r.output;
    EXPECT_NE(r.output.find(sig == SIGTERM ? "received SIGTERM" : "received SIGUSR1"), std::string::npos) << r.output;
    std::ifstream latest(save + "/latest");
    int64_t iteration = 0;
    latest >> iteration;
    EXPECT_GT(iteration, 0);
    EXPECT_LT(iteration, 3000);
    EXPECT_EQ(checkpoint_problem(save + "/" + checkpoint_dir_name(iteration) + "/checkpoint.h5"), "");
  }
}

}  // namespace
}  // namespace mt
