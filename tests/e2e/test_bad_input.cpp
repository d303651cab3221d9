// Bad input: a clear error naming the flag, file or value, and a non-zero
// exit, before any training step.
#include <gtest/gtest.h>

#include <filesystem>

#include "data/indexed_dataset.h"
#include "run_moetrain.h"

namespace mt {
namespace {

using test_util::run_moetrain;

class BadInput : public ::testing::Test {
 protected:
  void SetUp() override {
    test_util::make_store(dir, "store", test_util::synthetic_text(20000, 3));
  }
  // Trains one step of the tiny model on `store` with extra flags, expecting
  // a failure whose output contains `expected`.
  void expect_train_error(const std::string& flags, const std::string& expected,
                          const std::string& store_name = "store") {
    auto r = run_moetrain("train " + test_util::tiny_model_flags() + " --lr-warmup-samples 0 --data-path " +
                          (dir / store_name) + " --train-iters 1 " + flags);
    EXPECT_NE(r.status, 0) << r.output;
    EXPECT_NE(r.output.find(expected), std::string::npos) << "output lacks \"" << expected << "\":\n" << r.output;
    EXPECT_EQ(r.output.find("step "), std::string::npos) << "a step ran:\n" << r.output;
  }
  void copy_store(const std::string& name) {
    std::filesystem::copy_file(data::bin_path(dir / "store"), data::bin_path(dir / name));
    std::filesystem::copy_file(data::idx_path(dir / "store"), data::idx_path(dir / name));
  }
  test_util::TempDir dir;
};

// A library that computes wrong products (old kernels on a CPU newer than
// they know) is refused on every rank before the first step, naming the
// library, its kernels and how to choose others.
TEST_F(BadInput, AWrongMatrixProductStopsEveryRank) {
  expect_train_error("--debug-corrupt-gemm-check", "the start-up check of the matrix product failed on rank(s) 0");
  auto r = run_moetrain("train " + test_util::tiny_model_flags() + " --lr-warmup-samples 0 --data-path " +
                            (dir / "store") + " --train-iters 1 --debug-corrupt-gemm-check",
                        2);
  EXPECT_NE(r.status, 0) << r.output;
  for (const char* part : {"failed on rank(s) 0, 1", "matrix product is wrong", "oneDNN", "kernels",
                           "set ONEDNN_MAX_CPU_ISA"})
    EXPECT_NE(r.output.find(part), std::string::npos) << "output lacks \"" << part << "\":\n" << r.output;
  EXPECT_EQ(r.output.find("step "), std::string::npos) << "a step ran:\n" << r.output;
}

TEST_F(BadInput, HeadsNotDividingTheWidth) {
  expect_train_error("--hidden-size 60 --num-attention-heads 8",
                     "--num-attention-heads 8 does not divide --hidden-size 60");
}

TEST_F(BadInput, GroupsNotDividingHeads) {
  expect_train_error("--num-query-groups 3", "--num-query-groups 3 does not divide --num-attention-heads 4");
}

TEST_F(BadInput, TopKAboveExperts) {
  expect_train_error("--num-experts 2 --moe-router-topk 3", "--moe-router-topk 3 is larger than --num-experts 2");
}

TEST_F(BadInput, SequenceLongerThanTheData) {
  expect_train_error("--seq-length 60000", "sequence length 60000 needs at least 60001 tokens");
}

TEST_F(BadInput, MissingBinAndIdx) {
  copy_store("nobin");
  std::filesystem::remove(data::bin_path(dir / "nobin"));
  expect_train_error("", "nobin.bin", "nobin");
  copy_store("noidx");
  std::filesystem::remove(data::idx_path(dir / "noidx"));
  expect_train_error("", "noidx.idx", "noidx");
  expect_train_error("", "nothing_here.idx", "nothing_here");
}

TEST_F(BadInput, TruncatedBinAndIdx) {
  copy_store("shortbin");
  std::filesystem::resize_file(data::bin_path(dir / "shortbin"), 100);
  expect_train_error("", "shortbin.bin", "shortbin");
  copy_store("shortidx");
  std::filesystem::resize_file(data::idx_path(dir / "shortidx"), 40);
  expect_train_error("", "shortidx.idx", "shortidx");
}

TEST_F(BadInput, WrongMagic) {
  copy_store("magic");
  auto bytes = test_util::read_bytes(data::idx_path(dir / "magic"));
  bytes[0] = 'X';
  test_util::write_bytes(data::idx_path(dir / "magic"), bytes);
  expect_train_error("", "magic", "magic");
  auto r = run_moetrain("train " + test_util::tiny_model_flags() + " --lr-warmup-samples 0 --data-path " +
                        (dir / "magic") + " --train-iters 1");
  EXPECT_NE(r.output.find(data::idx_path(dir / "magic")), std::string::npos) << r.output;
}

TEST_F(BadInput, TokenIdsNotBelowTheVocabulary) {
  // Bytes are ids 0..255 and end-of-document is 256: a vocabulary of 128 is too small.
  expect_train_error("--vocab-size 128 --make-vocab-size-divisible-by 1", "vocab");
}

TEST_F(BadInput, UnknownConfigKey) {
  test_util::write_text(dir / "bad.toml", "num-layers = 2\nhidden-sise = 64\n");
  expect_train_error("--config " + (dir / "bad.toml"), "unknown key 'hidden-sise'");
  expect_train_error("--config " + (dir / "missing.toml"), "missing.toml");
}

TEST_F(BadInput, UnknownFlagAndBadValues) {
  expect_train_error("--hiden-size 64", "--hiden-size");
  expect_train_error("--global-batch-size 10", "--global-batch-size 10 is not divisible by --micro-batch-size 4");
  expect_train_error("--lr-decay-style wavy", "--lr-decay-style must be cosine, linear or constant");
}

TEST_F(BadInput, ParallelLayoutsNotYetAvailableAreRefused) {
  expect_train_error("--tp 2", "tensor-model-parallel-size");
}

// Expert parallelism: EP must be at least 1, divide the data-parallel size
// and the expert count, and needs experts; every rank stops.
TEST_F(BadInput, ExpertParallelSizesThatDoNotSplit) {
  expect_train_error("--ep 0", "--expert-model-parallel-size must be >= 1, got 0");
  expect_train_error("--ep 2", "--expert-model-parallel-size 2 must divide the data-parallel size 1");
  auto r = run_moetrain("train " + test_util::tiny_model_flags() + " --lr-warmup-samples 0 --data-path " +
                            (dir / "store") + " --train-iters 1 --micro-batch-size 2 --ep 2 --num-experts 1 "
                            "--moe-router-topk 1",
                        2);
  EXPECT_NE(r.status, 0) << r.output;
  for (const char* part : {"[rank 0]", "[rank 1]", "needs a mixture of experts; --num-experts is 1"})
    EXPECT_NE(r.output.find(part), std::string::npos) << "output lacks \"" << part << "\":\n" << r.output;
  auto odd = run_moetrain("train " + test_util::tiny_model_flags() + " --lr-warmup-samples 0 --data-path " +
                              (dir / "store") + " --train-iters 1 --micro-batch-size 2 --ep 2 --num-experts 3",
                          2);
  EXPECT_NE(odd.status, 0) << odd.output;
  EXPECT_NE(odd.output.find("--expert-model-parallel-size 2 does not divide --num-experts 3"), std::string::npos)
      << odd.output;
}

// The MoE designs' options (docs/design.md section 3) that cannot build a
// model, each refused by name; on two ranks, by both.
TEST_F(BadInput, MoeDesignsThatCannotBeBuilt) {
  expect_train_error("--moe-layer-freq '[0]*1+[1]*2'",
                     "--moe-layer-freq '[0]*1+[1]*2' gives 3 layers, the model has --num-layers 2");
  expect_train_error("--moe-layer-freq '[1,0'", "--moe-layer-freq");
  expect_train_error("--moe-router-num-groups 2 --moe-router-group-topk 3",
                     "--moe-router-group-topk 3 is larger than --moe-router-num-groups 2");
  expect_train_error("--moe-router-num-groups 3 --moe-router-group-topk 1",
                     "--moe-router-num-groups 3 does not divide --num-experts 4");
  expect_train_error("--moe-router-topk 3 --moe-router-num-groups 2 --moe-router-group-topk 2",
                     "--moe-router-topk 3 is not divisible by --moe-router-group-topk 2");
  expect_train_error("--moe-router-enable-expert-bias",
                     "--moe-router-enable-expert-bias works on sigmoid scores (Megatron's rule)");
  expect_train_error("--moe-router-load-balancing-type sinkhorn", "--moe-router-load-balancing-type must be");
  expect_train_error("--moe-router-dtype fp64", "--moe-router-dtype");
  expect_train_error("--moe-shared-expert-gate", "--moe-shared-expert-gate gates the shared expert");
  auto r = run_moetrain("train " + test_util::tiny_model_flags() + " --lr-warmup-samples 0 --data-path " +
                            (dir / "store") +
                            " --train-iters 1 --micro-batch-size 2 --num-experts 1 --moe-router-topk 1 "
                            "--moe-shared-expert-intermediate-size 64",
                        2);
  EXPECT_NE(r.status, 0) << r.output;
  for (const char* part : {"[rank 0]", "[rank 1]", "--moe-shared-expert-intermediate-size 64: a shared expert"})
    EXPECT_NE(r.output.find(part), std::string::npos) << "output lacks \"" << part << "\":\n" << r.output;
}

TEST_F(BadInput, EvalWithoutCheckpoint) {
  auto r = run_moetrain("eval --load " + (dir / "no_ckpt") + " --data-path " + (dir / "store"));
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("no_ckpt"), std::string::npos) << r.output;
}

TEST(Cli, HelpDocumentsEveryDesignFlag) {
  auto r = run_moetrain("train --help");
  EXPECT_EQ(r.status, 0);
  for (const char* flag :
       {"--tensor-model-parallel-size", "--tp", "--pipeline-model-parallel-size", "--pp",
        "--expert-model-parallel-size", "--ep", "--moe-z-loss-coeff",
        "--micro-batch-size", "--global-batch-size", "--seq-length", "--num-layers", "--hidden-size",
        "--num-attention-heads", "--num-query-groups", "--ffn-hidden-size", "--num-experts",
        "--moe-router-topk", "--moe-aux-loss-coeff", "--moe-expert-capacity-factor", "--vocab-size",
        "--make-vocab-size-divisible-by", "--data-path", "--train-iters", "--train-samples", "--lr",
        "--min-lr", "--lr-warmup-samples", "--lr-decay-samples", "--lr-decay-style", "--adam-beta1",
        "--adam-beta2", "--adam-eps", "--weight-decay", "--clip-grad", "--seed", "--save",
        "--save-interval", "--load", "--log-interval", "--config", "--swiglu", "--kv-channels",
        "--qk-layernorm", "--moe-ffn-hidden-size", "--moe-layer-freq", "--moe-shared-expert-intermediate-size",
        "--moe-shared-expert-gate", "--moe-router-score-function", "--moe-router-pre-softmax",
        "--moe-router-topk-scaling-factor", "--moe-router-num-groups", "--moe-router-group-topk",
        "--moe-router-load-balancing-type", "--moe-router-enable-expert-bias", "--moe-router-bias-update-rate",
        "--moe-router-dtype"})
    EXPECT_TRUE(r.output.find(std::string(flag) + " ") != std::string::npos ||
                r.output.find(std::string(flag) + ",") != std::string::npos ||
                r.output.find(std::string(flag) + "\n") != std::string::npos)
        << flag;
  auto e = run_moetrain("eval --help");
  EXPECT_EQ(e.status, 0);
  EXPECT_NE(e.output.find("--eval-samples"), std::string::npos);
}

}  // namespace
}  // namespace mt
