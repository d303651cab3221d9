// Batch-size ramp-up with Megatron-LM's semantics (--rampup-batch-size).
#include <gtest/gtest.h>

#include "data/batch_schedule.h"
#include "test_util.h"

namespace mt::data {
namespace {

TEST(BatchSchedule, ConstantWithoutRampup) {
  BatchSchedule s(32, 4, 2, {});
  EXPECT_EQ(s.global_batch(0), 32);
  EXPECT_EQ(s.global_batch(1000000), 32);
  EXPECT_EQ(s.micro_batches(0), 4);
  EXPECT_EQ(s.samples_after(10), 320);
}

TEST(BatchSchedule, RampupTableMatchesMegatron) {
  // START 16, INCR 16, over 600 samples to 64: three increments, one every
  // 200 samples; Megatron: steps = int(consumed / 200), full size once
  // consumed > 600.
  BatchSchedule s(64, 4, 2, {16, 16, 600});
  const std::pair<int64_t, int64_t> table[] = {{0, 16},   {199, 16}, {200, 32}, {399, 32},
                                               {400, 48}, {599, 48}, {600, 64}, {601, 64},
                                               {5000, 64}};
  for (auto [consumed, batch] : table) EXPECT_EQ(s.global_batch(consumed), batch) << consumed;
  EXPECT_EQ(s.micro_batches(0), 2);   // 16 / (4 x 2)
  EXPECT_EQ(s.micro_batches(700), 8);  // 64 / (4 x 2)
  // Steps from the start: 13 of 16 reach 208 (>= 200), 6 of 32 reach 400,
  // 5 of 48 reach 640 (> 600), then 64.
  int64_t consumed = 0;
  std::vector<int64_t> sizes;
  for (int i = 0; i < 26; ++i) {
    sizes.push_back(s.global_batch(consumed));
    consumed += sizes.back();
  }
  EXPECT_EQ(std::count(sizes.begin(), sizes.end(), 16), 13);
  EXPECT_EQ(std::count(sizes.begin(), sizes.end(), 32), 6);
  EXPECT_EQ(std::count(sizes.begin(), sizes.end(), 48), 5);
  EXPECT_EQ(s.samples_after(26), consumed);
  // Going on from step 13 (208 samples) lands where the whole run does.
  EXPECT_EQ(s.samples_after(13, 208), consumed);
}

TEST(BatchSchedule, UnevenIncrementSpacing) {
  // 2 increments over 100 samples: 50 samples each.
  BatchSchedule s(24, 8, 1, {8, 8, 100});
  EXPECT_EQ(s.global_batch(49), 8);
  EXPECT_EQ(s.global_batch(50), 16);
  EXPECT_EQ(s.global_batch(100), 24);
}

TEST(BatchSchedule, SizesThatDoNotDivideAreNamed) {
  test_util::expect_error([] { BatchSchedule(30, 4, 1, {}); },
                          {"--global-batch-size 30 is not divisible by --micro-batch-size 4"});
  // 16 + 8 = 24 is not a multiple of 4 x 4.
  test_util::expect_error([] { BatchSchedule(32, 4, 4, {16, 8, 100}); },
                          {"--rampup-batch-size", "batch size 24", "data-parallel size 4"});
  test_util::expect_error([] { BatchSchedule(64, 4, 1, {16, 20, 100}); }, {"not a multiple of INCR 20"});
  test_util::expect_error([] { BatchSchedule(64, 4, 1, {128, 16, 100}); }, {"exceeds --global-batch-size 64"});
  test_util::expect_error([] { BatchSchedule(64, 4, 1, {16, 16, 0}); }, {"must be positive"});
}

}  // namespace
}  // namespace mt::data
