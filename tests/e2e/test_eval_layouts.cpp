// `moetrain eval` on any layout (docs/design.md section 7): the same loss over the
// same tokens whatever the TP, PP, data-parallel and expert-parallel split.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <cmath>

#include "rounding_bound.h"
#include "run_moetrain.h"

namespace mt {
namespace {

using test_util::run_moetrain;

TEST(EvalLayouts, EveryLayoutReportsOneRanksLoss) {
  test_util::TempDir dir;
  const std::string store = test_util::make_store(dir, "store", test_util::synthetic_text(30000, 9));
  auto trained = run_moetrain("train " + test_util::tiny_model_flags() + " --num-layers 4 --lr-warmup-samples 0 " +
                              "--data-path " + store + " --train-iters 3 --save " + (dir / "ckpt"));
  ASSERT_EQ(trained.status, 0) << trained.output;

  const std::string eval = "eval --load " + (dir / "ckpt") + " --data-path " + store + " --eval-samples 13 --micro-batch-size 2";
  auto last_json = [](const std::string& out) { return nlohmann::json::parse(out.substr(out.rfind('{'))); };
  auto one = run_moetrain(eval);
  ASSERT_EQ(one.status, 0) << one.output;
  const auto ref = last_json(one.output);
  EXPECT_EQ(ref["tokens"], 13 * 64);

  struct Layout {
    const char* flags;
    int ranks;
  };
  // DP splits 13 samples 7 + 6 (2 ranks), 5 + 5 + 3 (3 ranks) and 4 + 4 + 4
  // + 1 (4 ranks): under EP the replicas with fewer samples run uncounted
  // micro-batches so that every all-to-all has all its ranks.
  for (const Layout& l : {Layout{"--tp 2", 2}, Layout{"--pp 2", 2}, Layout{"", 2}, Layout{"", 3},
                          Layout{"--tp 2 --pp 2", 4}, Layout{"--pp 2 --decoder-first-pipeline-num-layers 1", 2},
                          Layout{"--ep 2", 2}, Layout{"--ep 4", 4}, Layout{"--ep 2 --pp 2", 4}}) {
    SCOPED_TRACE(std::string(l.flags) + " on " + std::to_string(l.ranks) + " ranks");
    auto r = run_moetrain(eval + " " + l.flags, l.ranks);
    ASSERT_EQ(r.status, 0) << r.output;
    const auto j = last_json(r.output);
    EXPECT_EQ(j["tokens"], ref["tokens"]);
    // One forward pass, nothing amplified: the float32 floor of
    // tests/rounding_bound.h.
    EXPECT_NEAR(double(j["loss"]), double(ref["loss"]), test_util::RoundingScale().bound(0.0, double(ref["loss"])));
  }
}

}  // namespace
}  // namespace mt
