// Learning rate against consumed samples, Megatron's convention: linear
// warm-up lr * consumed / warmup while consumed <= warmup, then cosine
// 0.5 * (cos(pi * ratio) + 1) or linear 1 - ratio from lr to min_lr with
// ratio = (consumed - warmup) / (decay - warmup), min_lr after the decay end.
#include "optim/lr_schedule.h"

#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "runtime/check.h"

namespace mt {
namespace {

struct Point {
  int64_t consumed;
  double lr;
};

void expect_table(const LrScheduleConfig& cfg, const std::vector<Point>& table) {
  validate(cfg);
  for (const Point& p : table)
    EXPECT_NEAR(learning_rate(cfg, p.consumed), p.lr, 1e-15)
        << cfg.decay_style << " at " << p.consumed << " samples";
}

double cosine(double ratio) { return 0.5 * (std::cos(M_PI * ratio) + 1.0); }

TEST(LrSchedule, WarmupThenCosineToMinLr) {
  LrScheduleConfig cfg{.lr = 1e-3, .min_lr = 1e-4, .warmup_samples = 100, .decay_samples = 1100, .decay_style = "cosine"};
  expect_table(cfg, {
                        {0, 0.0},
                        {1, 1e-5},
                        {50, 5e-4},
                        {99, 9.9e-4},
                        {100, 1e-3},
                        {101, 1e-4 + 9e-4 * cosine(0.001)},
                        {350, 1e-4 + 9e-4 * 0.5 * (std::sqrt(0.5) + 1.0)},  // ratio 1/4
                        {600, 5.5e-4},                                       // ratio 1/2
                        {850, 1e-4 + 9e-4 * 0.5 * (1.0 - std::sqrt(0.5))},  // ratio 3/4
                        {1100, 1e-4},
                        {1101, 1e-4},
                        {100000, 1e-4},
                    });
}

TEST(LrSchedule, CosineWithoutWarmupStartsAtLr) {
  LrScheduleConfig cfg{.lr = 2e-3, .min_lr = 0.0, .warmup_samples = 0, .decay_samples = 200, .decay_style = "cosine"};
  expect_table(cfg, {{0, 2e-3}, {100, 1e-3}, {200, 0.0}, {300, 0.0}});
}

TEST(LrSchedule, WarmupThenLinear) {
  LrScheduleConfig cfg{.lr = 1e-3, .min_lr = 1e-4, .warmup_samples = 10, .decay_samples = 110, .decay_style = "linear"};
  expect_table(cfg, {
                        {0, 0.0},
                        {5, 5e-4},
                        {10, 1e-3},
                        {35, 1e-4 + 9e-4 * 0.75},
                        {60, 5.5e-4},
                        {85, 1e-4 + 9e-4 * 0.25},
                        {110, 1e-4},
                        {500, 1e-4},
                    });
}

TEST(LrSchedule, Constant) {
  LrScheduleConfig cfg{.lr = 2e-4, .min_lr = 0.0, .warmup_samples = 4};
  cfg.decay_samples = 0;  // not needed for constant
  cfg.decay_style = "constant";
  expect_table(cfg, {{0, 0.0}, {1, 5e-5}, {2, 1e-4}, {4, 2e-4}, {5, 2e-4}, {1000000, 2e-4}});
  cfg.warmup_samples = 0;
  expect_table(cfg, {{0, 2e-4}, {7, 2e-4}});
}

void expect_invalid(const LrScheduleConfig& cfg, const std::string& flag) {
  try {
    validate(cfg);
    FAIL() << "expected mt::Error naming " << flag;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(flag), std::string::npos) << e.what();
  }
}

TEST(LrSchedule, ValidateNamesTheFlag) {
  LrScheduleConfig good;
  good.lr = 1e-3;
  good.min_lr = 1e-5;
  good.warmup_samples = 10;
  good.decay_samples = 100;
  EXPECT_NO_THROW(validate(good));

  LrScheduleConfig c = good;
  c.min_lr = 2e-3;  // above lr
  expect_invalid(c, "--min-lr");

  c = good;
  c.decay_style = "exponential";
  expect_invalid(c, "--lr-decay-style");

  for (const char* style : {"cosine", "linear"}) {
    c = good;
    c.decay_style = style;
    c.decay_samples = 10;  // == warmup
    expect_invalid(c, "--lr-decay-samples");
    c.decay_samples = 5;  // < warmup
    expect_invalid(c, "--lr-decay-samples");
  }

  c = good;
  c.lr = -1e-3;
  c.min_lr = 0.0;
  expect_invalid(c, "--lr");

  c = good;
  c.warmup_samples = -1;
  expect_invalid(c, "--lr-warmup-samples");
}

}  // namespace
}  // namespace mt
