// The whole path a user takes: prepare-data, train, save, eval, resume.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "checkpoint/checkpoint_dir.h"
#include "run_moetrain.h"
#include "checkpoint/hdf5_file.h"

namespace mt {
namespace {

using test_util::run_moetrain;

class EndToEnd : public ::testing::Test {
 protected:
  void SetUp() override {
    test_util::write_text(dir / "corpus_a.txt", test_util::synthetic_text(60000, 1));
    test_util::write_text(dir / "corpus_b.txt", test_util::synthetic_text(60000, 2));
    auto r = run_moetrain("prepare-data --input " + dir.path() + " --output-prefix " + (dir / "store"));
    ASSERT_EQ(r.status, 0) << r.output;
  }
  std::vector<nlohmann::json> metrics(const std::string& path) { return test_util::read_metrics(path); }
  test_util::TempDir dir;
};

TEST_F(EndToEnd, TinyModelLearnsIn50Steps) {
  auto r = run_moetrain("train " + test_util::tiny_model_flags() + " --data-path " + (dir / "store") +
                        " --train-iters 50 --log-interval 5 --metrics-file " + (dir / "m.jsonl"));
  ASSERT_EQ(r.status, 0) << r.output;
  auto m = metrics(dir / "m.jsonl");
  ASSERT_EQ(m.size(), 10u);
  const double first = m.front()["loss"], last = m.back()["loss"];
  // A uniform guess over the 384-token vocabulary costs ln(384) = 5.95 nats;
  // the corpus is ~26 letters in a few dozen words.
  EXPECT_GT(first, 4.5);
  EXPECT_LT(last, 2.6) << r.output;
  for (const auto& rec : m) {
    EXPECT_GT(double(rec["aux_loss"]), 0.0);
    EXPECT_TRUE(rec.contains("tokens_per_s") && rec.contains("lr") && rec.contains("global_batch"));
  }
  EXPECT_NE(r.output.find("eta"), std::string::npos);
}

// bf16 trains as well as float32: on real text (this repository's docs and
// sources, English and C++), 200 steps of the tiny MoE end within 3% of the
// float32 run's loss (over the last 50 steps), and each precision's
// checkpoint evaluates alike in the other. Gradients accumulated and
// reduce-scattered in bf16 (--grad-reduce-in-bf16) end within 1% of float32
// gradients (the bound of issue 35), both bf16 runs on two replicas, of the
// dense sibling: in the MoE model bf16 rounding flips near-ties of the
// router, after which the two runs route differently and their losses part
// by more than the gradients' rounding does (over 1% on some corpora; the
// workstation MoE's figure is in docs/benchmarks.md).
TEST_F(EndToEnd, Bf16TracksFloat32On200StepsOfRealText) {
  const std::filesystem::path source(MT_SOURCE_DIR), text = dir / "real";
  std::filesystem::create_directories(text);
  for (const char* folder : {"docs", "model", "parallel", "runtime"})
    for (const auto& e : std::filesystem::directory_iterator(source / folder))
      if (e.is_regular_file())  // not docs/images/
        std::filesystem::copy_file(e.path(), text / (std::string(folder) + "_" + e.path().filename().string()));
  auto prepared = run_moetrain("prepare-data --input " + text.string() + " --output-prefix " + (dir / "real_store"));
  ASSERT_EQ(prepared.status, 0) << prepared.output;
  const std::string common = "train " + test_util::tiny_model_flags() + " --data-path " + (dir / "real_store") +
                             " --train-iters 200 --lr-decay-samples 1600 --log-interval 10";
  auto fp32 = run_moetrain(common + " --metrics-file " + (dir / "fp32.jsonl") + " --save " + (dir / "fp32"));
  ASSERT_EQ(fp32.status, 0) << fp32.output;
  auto bf16 = run_moetrain(common + " --bf16 --metrics-file " + (dir / "bf16.jsonl") + " --save " + (dir / "bf16"));
  ASSERT_EQ(bf16.status, 0) << bf16.output;
  for (const char* grads : {"fp32", "bf16"}) {
    const std::string name = std::string("dp2_grads_") + grads;
    auto dp2 = run_moetrain(common + " --num-experts 1 --moe-router-topk 1 --bf16 --metrics-file " +
                                (dir / (name + ".jsonl")) + (grads == std::string("bf16") ? " --grad-reduce-in-bf16" : ""),
                            2);
    ASSERT_EQ(dp2.status, 0) << dp2.output;
  }
  const auto a = metrics(dir / "fp32.jsonl"), b = metrics(dir / "bf16.jsonl");
  const auto g32 = metrics(dir / "dp2_grads_fp32.jsonl"), g16 = metrics(dir / "dp2_grads_bf16.jsonl");
  ASSERT_EQ(a.size(), 20u);
  ASSERT_EQ(b.size(), 20u);
  ASSERT_EQ(g16.size(), 20u);
  // The mean of the last five logged losses (steps 160 to 200): one step's
  // loss swings with its batch by more than the precision moves it.
  const auto tail_mean = [](const std::vector<nlohmann::json>& m) {
    double sum = 0;
    for (size_t i = m.size() - 5; i < m.size(); ++i) sum += double(m[i]["loss"]);
    return sum / 5;
  };
  const double first = a.front()["loss"], fp32_loss = tail_mean(a), bf16_loss = tail_mean(b);
  EXPECT_LT(fp32_loss, first - 1.0) << "the float32 run did not learn";
  EXPECT_NEAR(bf16_loss, fp32_loss, 0.03 * fp32_loss);
  const double fp32_grads_loss = tail_mean(g32), bf16_grads_loss = tail_mean(g16);
  EXPECT_NEAR(bf16_grads_loss, fp32_grads_loss, 0.01 * fp32_grads_loss);
  RecordProperty("fp32_loss", std::to_string(fp32_loss));
  RecordProperty("bf16_loss", std::to_string(bf16_loss));
  RecordProperty("dp2_fp32_grads_loss", std::to_string(fp32_grads_loss));
  RecordProperty("dp2_bf16_grads_loss", std::to_string(bf16_grads_loss));

  // The bf16 run's float32 checkpoint, evaluated in float32 and in bf16.
  const std::string eval = "eval --data-path " + (dir / "real_store") + " --eval-samples 64 --load " + (dir / "bf16");
  auto in_fp32 = run_moetrain(eval), in_bf16 = run_moetrain(eval + " --bf16");
  ASSERT_EQ(in_fp32.status, 0) << in_fp32.output;
  ASSERT_EQ(in_bf16.status, 0) << in_bf16.output;
  auto eval_loss = [](const std::string& out) {
    return nlohmann::json::parse(out.substr(out.rfind('{')))["loss"].get<double>();
  };
  const double l32 = eval_loss(in_fp32.output), l16 = eval_loss(in_bf16.output);
  EXPECT_NE(l32, l16);
  EXPECT_NEAR(l16, l32, 0.03 * l32);
  RecordProperty("eval_fp32", std::to_string(l32));
  RecordProperty("eval_bf16", std::to_string(l16));
}

// Where oneDNN has no bf16 product (a CPU without AVX-512, here simulated by
// capping its instructions at AVX2), --bf16 still trains, on widened
// inputs, and the start-up line says it is slow.
TEST_F(EndToEnd, Bf16WithoutBf16InstructionsRunsAndSaysItIsSlow) {
  setenv("ONEDNN_MAX_CPU_ISA", "AVX2", 1);
  auto r = run_moetrain("train " + test_util::tiny_model_flags() + " --bf16 --data-path " + (dir / "store") +
                        " --train-iters 3 --lr-warmup-samples 8 --log-interval 1");
  unsetenv("ONEDNN_MAX_CPU_ISA");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("widened to float32 (no bf16 matmul on this CPU: slow)"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("step      3/3"), std::string::npos) << r.output;
}

TEST_F(EndToEnd, SaveEvalAndResumeContinueTheSameRun) {
  const std::string common = "train " + test_util::tiny_model_flags() + " --data-path " + (dir / "store") +
                             " --log-interval 1 --train-iters 8";
  // Straight through: 8 steps.
  auto straight = run_moetrain(common + " --metrics-file " + (dir / "straight.jsonl"));
  ASSERT_EQ(straight.status, 0) << straight.output;
  // The same run stopped after 4 steps (checkpoints at 2 and 4), then resumed.
  auto first = run_moetrain(common + " --train-iters 4 --lr-decay-samples 64 --save " + (dir / "ckpt") +
                            " --save-interval 2 --metrics-file " + (dir / "first.jsonl"));
  ASSERT_EQ(first.status, 0) << first.output;
  EXPECT_TRUE(std::filesystem::exists(dir / "ckpt/iter_0000002/checkpoint.h5"));
  EXPECT_TRUE(std::filesystem::exists(dir / "ckpt/iter_0000004/checkpoint.h5"));
  std::ifstream latest(dir / "ckpt/latest");
  int64_t latest_iter = 0;
  latest >> latest_iter;
  EXPECT_EQ(latest_iter, 4);

  {
    H5File f = H5File::open(dir / "ckpt/iter_0000004/checkpoint.h5", MPI_COMM_WORLD);
    EXPECT_EQ(f.attr_int("iteration"), 4);
    EXPECT_EQ(f.attr_int("consumed_samples"), 32);
    EXPECT_EQ(f.attr_int("consumed_tokens"), 32 * 64);
    EXPECT_EQ(f.attr_int("adam_step"), 4);
    EXPECT_EQ(f.attr_int("seed"), 7);
    EXPECT_EQ(f.shape("model/layers/1/experts/w1"), (std::vector<uint64_t>{4, 128, 64}));
    EXPECT_EQ(f.shape("optim/exp_avg_sq/layers/0/wk"), (std::vector<uint64_t>{16, 64}));
    EXPECT_EQ(f.shape("model/embed"), (std::vector<uint64_t>{384, 64}));
    auto cfg = nlohmann::json::parse(f.attr_string("config"));
    EXPECT_EQ(cfg["model"]["num_experts"], 4);
    EXPECT_FALSE(f.attr_string("layout").empty());
  }

  auto resumed = run_moetrain(common + " --lr-decay-samples 64 --load " + (dir / "ckpt") +
                              " --save " + (dir / "ckpt") + " --metrics-file " + (dir / "resumed.jsonl"));
  ASSERT_EQ(resumed.status, 0) << resumed.output;
  EXPECT_NE(resumed.output.find("resumed from"), std::string::npos);
  EXPECT_EQ(resumed.output.find("warning"), std::string::npos) << resumed.output;
  auto s = metrics(dir / "straight.jsonl"), a = metrics(dir / "first.jsonl"), b = metrics(dir / "resumed.jsonl");
  ASSERT_EQ(s.size(), 8u);
  ASSERT_EQ(a.size(), 4u);
  ASSERT_EQ(b.size(), 4u);
  // Same weights, optimizer state, data position and LR: the same losses.
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(int(b[i]["step"]), 5 + i);
    EXPECT_DOUBLE_EQ(double(a[i]["loss"]), double(s[i]["loss"]));
    EXPECT_DOUBLE_EQ(double(b[i]["loss"]), double(s[4 + i]["loss"]));
  }

  // eval reads the newest checkpoint (iteration 8) and reports mean CE as a JSON last line.
  auto ev = run_moetrain("eval --load " + (dir / "ckpt") + " --data-path " + (dir / "store") +
                         " --eval-samples 12 --micro-batch-size 5");
  ASSERT_EQ(ev.status, 0) << ev.output;
  const std::string last_line = ev.output.substr(ev.output.rfind('{'));
  auto j = nlohmann::json::parse(last_line);
  EXPECT_EQ(j["tokens"], 12 * 64);
  EXPECT_GT(double(j["loss"]), 0.5);
  EXPECT_LT(double(j["loss"]), 6.0);
  // The same checkpoint by its iteration directory gives the same answer.
  auto ev2 = run_moetrain("eval --load " + (dir / "ckpt/iter_0000008") + " --data-path " + (dir / "store") +
                          " --eval-samples 12");
  ASSERT_EQ(ev2.status, 0) << ev2.output;
  EXPECT_NEAR(double(nlohmann::json::parse(ev2.output.substr(ev2.output.rfind('{')))["loss"]),
              double(j["loss"]), 1e-5);
}

TEST_F(EndToEnd, ResumingWithAnotherSeedWarns) {
  const std::string base = "train " + test_util::tiny_model_flags() + " --lr-warmup-samples 0 --data-path " +
                           (dir / "store");
  ASSERT_EQ(run_moetrain(base + " --train-iters 1 --save " + (dir / "ckpt")).status, 0);
  auto r = run_moetrain(base + " --train-iters 2 --seed 8 --load " + (dir / "ckpt"));
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("warning: --seed differs from the checkpoint's (8 now, 7 then)"), std::string::npos)
      << r.output;
}

TEST_F(EndToEnd, ResumingADifferentModelNamesTheFields) {
  const std::string base = "train " + test_util::tiny_model_flags() + " --data-path " + (dir / "store");
  const std::string short_run = " --lr-warmup-samples 0";
  auto saved = run_moetrain(base + short_run + " --train-iters 1 --save " + (dir / "ckpt"));
  ASSERT_EQ(saved.status, 0) << saved.output;
  auto r = run_moetrain(base + short_run + " --train-iters 2 --num-experts 8 --load " + (dir / "ckpt"));
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("num_experts: checkpoint 4 vs run 8"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace mt
