// Context parallelism through the real binary under mpirun: a dense model
// with documents at CP 2, and at TP 2 x CP 2 with sequence parallelism,
// trains and saves what one rank does (float32 bounds: same_training.h);
// its checkpoint resumes at CP 4 and on one rank; layouts it cannot split
// are refused by name on every rank.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "checkpoint/checkpoint_dir.h"
#include "run_moetrain.h"
#include "same_training.h"

namespace mt {
namespace {

using test_util::run_moetrain;

class ContextParallelRun : public ::testing::Test {
 protected:
  // Documents of 40 to 240 bytes, a JSON line each: several end inside
  // every 64-token sample.
  void SetUp() override {
    const std::string text = test_util::synthetic_text(40000, 4);
    std::string lines;
    for (size_t at = 0, len = 40; at + len < text.size(); at += len, len = 40 + (at * 7) % 200)
      lines += nlohmann::json{{"text", text.substr(at, len)}}.dump() + "\n";
    test_util::write_text(dir / "docs.jsonl", lines);
    const auto r = run_moetrain("prepare-data --input " + (dir / "docs.jsonl") + " --output-prefix " + (dir / "docs"));
    ASSERT_EQ(r.status, 0) << r.output;
  }
  // The tiny model made dense, with documents; the LR decays over 48
  // samples whatever the run's length, so stopped and straight runs match.
  std::string train(const std::string& name, int iterations) {
    return "train " + test_util::tiny_model_flags() +
           " --num-experts 1 --moe-router-topk 1 --reset-position-ids --reset-attention-mask"
           " --lr-warmup-samples 0 --lr-decay-samples 48 --log-interval 1 --data-path " +
           (dir / "docs_text_document") + " --train-iters " + std::to_string(iterations) + " --metrics-file " +
           (dir / (name + ".jsonl")) + " --save " + (dir / name);
  }
  test_util::BinaryRun run(const std::string& name, int iteration) {
    return {dir / (name + ".jsonl"), dir / (name + "/" + checkpoint_dir_name(iteration) + "/checkpoint.h5")};
  }
  test_util::TempDir dir;
};

TEST_F(ContextParallelRun, TrainsSavesAndResumesWhatOneRankDoes) {
  const std::string perturbed = test_util::perturbed_flags();
  for (const auto& [name, flags, ranks] :
       {std::tuple{"one", "", 0}, std::tuple{"perturbed", perturbed.c_str(), 0},
        std::tuple{"cp2", " --cp 2", 2}, std::tuple{"tp2_cp2_sp", " --tp 2 --cp 2 --sequence-parallel", 4},
        std::tuple{"first", " --cp 2", 2}}) {
    const auto r = run_moetrain(train(name, std::string(name) == "first" ? 2 : 4) + flags, ranks);
    ASSERT_EQ(r.status, 0) << r.output;
    if (std::string(name) == "cp2") {
      EXPECT_NE(r.output.find("x CP=2"), std::string::npos) << r.output;
    }
  }
  const std::vector<std::string> tensors = {"model/embed", "model/layers/0/wq", "model/layers/1/wk",
                                            "model/layers/1/mlp/w1", "model/final_norm", "model/lm_head",
                                            "optim/exp_avg/layers/0/wo", "optim/exp_avg_sq/layers/1/attn_norm"};
  for (const char* layout : {"cp2", "tp2_cp2_sp"}) {
    SCOPED_TRACE(layout);
    test_util::expect_same_training(run(layout, 4), run("one", 4), run("perturbed", 4), 4, tensors);
  }
  // The CP 2 checkpoint of step 2 resumes at CP 4 and on one rank.
  for (const auto& [name, flags, ranks] : {std::tuple{"to_cp4", " --cp 4", 4}, std::tuple{"to_one", "", 0}}) {
    SCOPED_TRACE(name);
    const auto r = run_moetrain(train(name, 4) + flags + " --load " + (dir / "first"), ranks);
    ASSERT_EQ(r.status, 0) << r.output;
    EXPECT_NE(r.output.find("resumed from"), std::string::npos) << r.output;
    ASSERT_EQ(test_util::read_metrics(dir / (std::string(name) + ".jsonl")).size(), 2u);
    test_util::expect_same_training(run(name, 4), run("one", 4), run("perturbed", 4), 4, tensors, 2);
  }
}

TEST_F(ContextParallelRun, LayoutsItCannotSplitAreRefusedByName) {
  auto expect_refused = [&](const std::string& flags, int ranks, const std::string& what) {
    const auto r = run_moetrain(train("bad", 1) + flags, ranks);
    EXPECT_NE(r.status, 0);
    for (const std::string& part : {std::string("[rank 0]"), std::string("[rank 1]"), what})
      EXPECT_NE(r.output.find(part), std::string::npos) << flags << "\n" << r.output;
  };
  expect_refused(" --cp 2 --seq-length 62", 2, "--seq-length 62 does not divide by 4");
  expect_refused(" --cp 4", 2, "world size 2 is not divisible by --tensor-model-parallel-size 1 x "
                               "--context-parallel-size 4");
  expect_refused(" --cp 2 --num-experts 4 --moe-router-topk 2", 2, "with a mixture of experts (--num-experts 4)");
}

}  // namespace
}  // namespace mt
