// The interval log's straggler report (docs/clusters.md): the rank whose
// compute took longest, against the median rank's.
#include <gtest/gtest.h>

#include "training/training_log.h"

namespace mt {
namespace {

TEST(Stragglers, TheSlowestRankAgainstTheMedian) {
  const Straggler odd = slowest_rank({1.0, 3.0, 0.5});  // median 1.0
  EXPECT_EQ(odd.rank, 1);
  EXPECT_DOUBLE_EQ(odd.over_median, 2.0);
  const Straggler even = slowest_rank({1.0, 1.2, 0.8, 2.2});  // median (1.0 + 1.2) / 2
  EXPECT_EQ(even.rank, 3);
  EXPECT_DOUBLE_EQ(even.over_median, 2.2 / 1.1 - 1.0);
  EXPECT_EQ(slowest_rank({0.0, 0.0}).over_median, 0.0);  // nothing measured
}

}  // namespace
}  // namespace mt
