// Stragglers and utilisation (docs/clusters.md): each log interval names the
// rank whose compute took longest and how much longer than the median
// rank's (the metrics' "ranks"), and shows the model FLOPs utilisation
// against the matrix-product peak measured at start-up.
#include <gtest/gtest.h>

#include <string>

#include "run_moetrain.h"

namespace mt {
namespace {

using test_util::run_moetrain;

TEST(Stragglers, ASleepingRankIsNamedAndMfuIsShown) {
  test_util::TempDir dir;
  const std::string store = test_util::make_store(dir, "store", test_util::synthetic_text(100000, 11));
  // DP2; rank 1 sleeps 300 ms in every step, so its compute exceeds the
  // median (the mean of the two) by (slow - fast) / (slow + fast) > 0.2
  // unless the other rank's own compute took over 600 ms a step.
  const auto r = run_moetrain("train " + test_util::tiny_model_flags() + " --data-path " + store +
                                  " --train-iters 4 --log-interval 2 --lr-decay-samples 96 --debug-slow-ms 300 "
                                  "--debug-fail-rank 1 --metrics-file " + (dir / "m.jsonl"),
                              2);
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("matrix-product peak: "), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("| slowest rank 1 +"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("% compute"), std::string::npos) << r.output;
  const auto records = test_util::read_metrics(dir / "m.jsonl");
  ASSERT_EQ(records.size(), 2u);
  for (const auto& record : records) {
    EXPECT_EQ(record["ranks"]["slowest"], 1) << record.dump();
    EXPECT_GT(double(record["ranks"]["slowest_over_median"]), 0.2) << record.dump();
    EXPECT_EQ(record["ranks"]["compute_s"].size(), 2u);
    EXPECT_GT(double(record["mfu"]), 0.0);
    EXPECT_LT(double(record["mfu"]), 1.0);  // the model's FLOPs cannot beat the products' peak
  }
}

}  // namespace
}  // namespace mt
