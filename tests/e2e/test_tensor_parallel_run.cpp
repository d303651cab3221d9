// Tensor parallelism through the real binary under mpirun, with and without
// sequence parallelism: the same losses and the same checkpoint as one rank
// (float32 bounds: same_training.h).
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <cmath>
#include <fstream>
#include <regex>

#include "run_moetrain.h"
#include "same_training.h"
#include "checkpoint/hdf5_file.h"

namespace mt {
namespace {

using test_util::run_moetrain;

// Rank 0's "activations N B a micro-batch" of a run's start-up lines.
int64_t rank0_activation_bytes(const std::string& output) {
  std::smatch m;
  const std::regex line(R"(memory rank 0 \(.*activations (\d+) B a micro-batch)");
  return std::regex_search(output, m, line) ? std::stoll(m[1]) : -1;
}

class TensorParallelRun : public ::testing::Test {
 protected:
  void SetUp() override {
    test_util::make_store(dir, "store", test_util::synthetic_text(40000, 4));
  }
  std::string train(const std::string& name) {
    return "train " + test_util::tiny_model_flags() + " --lr-warmup-samples 0 --data-path " + (dir / "store") +
           " --train-iters 3 --log-interval 1 --metrics-file " + (dir / (name + ".jsonl")) + " --save " +
           (dir / name);
  }
  std::string checkpoint(const std::string& name) { return dir / (name + "/iter_0000003/checkpoint.h5"); }
  test_util::BinaryRun run(const std::string& name) { return {dir / (name + ".jsonl"), checkpoint(name)}; }
  test_util::TempDir dir;
};

TEST_F(TensorParallelRun, TwoRanksTrainAndSaveWhatOneRankDoes) {
  auto one = run_moetrain(train("one"));
  ASSERT_EQ(one.status, 0) << one.output;
  auto two = run_moetrain(train("two") + " --tp 2", 2);
  ASSERT_EQ(two.status, 0) << two.output;
  auto sp = run_moetrain(train("sp") + " --tp 2 --sequence-parallel", 2);
  ASSERT_EQ(sp.status, 0) << sp.output;
  EXPECT_NE(two.output.find("TP=2 x PP=1 x DP=1"), std::string::npos) << two.output;
  // Each rank holds about half the parameters (norms and routers are whole).
  EXPECT_NE(two.output.find("of one rank's"), std::string::npos);

  auto perturbed = run_moetrain(train("perturbed") + test_util::perturbed_flags());
  ASSERT_EQ(perturbed.status, 0) << perturbed.output;

  // The same losses, gradient norms and logical tensors: TP ranks wrote their slices.
  H5File fb = H5File::open(checkpoint("two"), MPI_COMM_SELF);
  EXPECT_EQ(nlohmann::json::parse(fb.attr_string("layout"))["tp"], 2);
  for (const char* layout : {"two", "sp"}) {
    SCOPED_TRACE(layout);
    test_util::expect_same_training(
        run(layout), run("one"), run("perturbed"), 2,
        {"model/embed", "model/layers/0/wq", "model/layers/0/wk", "model/layers/1/wo", "model/layers/1/router",
         "model/layers/0/experts/w1", "model/layers/1/experts/w2", "model/final_norm", "model/layers/1/mlp_norm",
         "model/lm_head", "optim/exp_avg/layers/0/experts/w2", "optim/exp_avg_sq/lm_head", "optim/exp_avg/embed",
         "optim/exp_avg_sq/layers/0/attn_norm"});
  }
  // Sequence parallelism halves what each rank keeps of the residual
  // stream: per layer x, attn_norm(x), h, mlp_norm(h) [T, d] and the two
  // norms' statistics [T]; the stage output, the final norm's output [T, d]
  // and statistics [T]. T = 4 x 64 tokens, d = 64, 2 layers, float32.
  const int64_t T = 4 * 64, d = 64, layers = 2;
  const int64_t residual = layers * (4 * T * d * 4 + 2 * T * 4) + 2 * T * d * 4 + T * 4;
  EXPECT_EQ(rank0_activation_bytes(two.output) - rank0_activation_bytes(sp.output), residual / 2)
      << two.output << sp.output;
  const auto records = test_util::read_metrics(dir / "sp.jsonl");
  EXPECT_GT(records.back()["tp_sp_bytes"].get<double>(), 0.0);
  EXPECT_EQ(test_util::read_metrics(dir / "two.jsonl").back()["tp_sp_bytes"].get<double>(), 0.0);
  EXPECT_EQ(test_util::read_metrics(dir / "two.jsonl").size(), 3u);
  // The TP=2 checkpoint evaluates on one rank.
  auto ev = run_moetrain("eval --load " + (dir / "two") + " --data-path " + (dir / "store") + " --eval-samples 8");
  ASSERT_EQ(ev.status, 0) << ev.output;
}

TEST_F(TensorParallelRun, LayoutErrorsStopEveryRank) {
  auto r = run_moetrain(train("bad") + " --tp 3", 2);
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("world size 2 is not divisible by tensor-model-parallel-size 3"), std::string::npos)
      << r.output;
  auto h = run_moetrain(train("heads") + " --tp 2 --num-attention-heads 2 --hidden-size 64 --num-query-groups 1"
                        " --ffn-hidden-size 129", 2);
  EXPECT_NE(h.status, 0);
  EXPECT_NE(h.output.find("--ffn-hidden-size 129 is not divisible by --tensor-model-parallel-size 2"),
            std::string::npos) << h.output;
  auto s = run_moetrain(train("sp") + " --tp 2 --sequence-parallel --seq-length 63", 2);
  EXPECT_NE(s.status, 0);
  for (const char* part : {"[rank 0]", "[rank 1]", "--seq-length 63 does not divide by --tensor-model-parallel-size 2"})
    EXPECT_NE(s.output.find(part), std::string::npos) << s.output;
}

// Megatron's Mixtral example passes --sequence-parallel at TP 1: it runs,
// warned, without it.
TEST_F(TensorParallelRun, SequenceParallelAtOneTensorRankIsOffWithAWarning) {
  auto r = run_moetrain(train("sp_tp1") + " --sequence-parallel --train-iters 1");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("warning: --sequence-parallel at --tensor-model-parallel-size 1 has nothing to split"),
            std::string::npos)
      << r.output;
}

}  // namespace
}  // namespace mt
