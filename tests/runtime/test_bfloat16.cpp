// bf16 rounding against the definition: of the two bf16 values around x
// (its truncation and the next one away from zero), the nearer one, the even
// one on a tie, computed here in exact double arithmetic.
#include "runtime/bfloat16.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>

namespace mt {
namespace {

double value_of(uint16_t bits) { return double(float(bf16::from_bits(bits))); }

uint16_t nearest_by_definition(double x) {
  const double a = std::abs(x);
  const float fa = float(a);
  uint32_t u;
  std::memcpy(&u, &fa, sizeof u);
  // The largest bf16 magnitude not above a, and the next one.
  uint16_t low = uint16_t(u >> 16);
  while (low > 0 && value_of(low) > a) --low;
  const uint16_t high = uint16_t(low + 1);
  const double dl = a - value_of(low), dh = value_of(high) - a;
  const uint16_t magnitude = dl < dh ? low : dh < dl ? high : ((low & 1) ? high : low);
  return x < 0 ? uint16_t(magnitude | 0x8000) : magnitude;
}

TEST(Bfloat16, RoundsToNearestEvenLikeTheDefinition) {
  std::mt19937_64 rng(3);
  std::uniform_real_distribution<double> mantissa(1.0, 2.0);
  std::uniform_int_distribution<int> exponent(-130, 127);
  for (int i = 0; i < 200000; ++i) {
    const double x = std::ldexp(mantissa(rng), exponent(rng)) * (i % 2 ? -1 : 1);
    if (std::abs(x) >= 0x1.FEp127) continue;  // the overflow to infinity: SpecialValues
    const float f = float(x);
    ASSERT_EQ(bf16(f).bits, nearest_by_definition(double(f))) << "float " << f;
    ASSERT_EQ(bf16(x).bits, nearest_by_definition(x)) << "double " << x;
  }
}

TEST(Bfloat16, TiesGoToEvenAndADoubleRoundsOnce) {
  // 1 + 2^-8 lies halfway between 1 and 1 + 2^-7: to 1 (even).
  EXPECT_EQ(float(bf16(1.0f + 0x1p-8f)), 1.0f);
  // 1 + 3 * 2^-8 lies halfway between 1 + 2^-7 and 1 + 2^-6: to the even one.
  EXPECT_EQ(float(bf16(1.0f + 3 * 0x1p-8f)), 1.0f + 0x1p-6f);
  // Just above the first tie as a double, though float(x) is the tie itself:
  // rounding once gives 1 + 2^-7, rounding twice would give 1.
  const double above_tie = 1.0 + 0x1p-8 + 0x1p-40;
  ASSERT_EQ(double(float(above_tie)), 1.0 + 0x1p-8);
  EXPECT_EQ(float(bf16(above_tie)), 1.0f + 0x1p-7f);
  EXPECT_EQ(float(bf16(-above_tie)), -(1.0f + 0x1p-7f));
}

TEST(Bfloat16, SpecialValues) {
  EXPECT_TRUE(std::isnan(float(bf16(std::numeric_limits<float>::quiet_NaN()))));
  EXPECT_TRUE(std::isnan(float(bf16(std::numeric_limits<double>::signaling_NaN()))));
  EXPECT_EQ(float(bf16(std::numeric_limits<float>::infinity())), std::numeric_limits<float>::infinity());
  EXPECT_EQ(float(bf16(-std::numeric_limits<float>::infinity())), -std::numeric_limits<float>::infinity());
  // The largest float rounds up to infinity; the largest bf16 stays.
  EXPECT_EQ(float(bf16(std::numeric_limits<float>::max())), std::numeric_limits<float>::infinity());
  EXPECT_EQ(float(bf16(0x1.FEp127f)), 0x1.FEp127f);
  EXPECT_EQ(bf16(-0.0f).bits, 0x8000);
  // Subnormals keep their top 7 mantissa bits, rounded.
  EXPECT_EQ(float(bf16(0x1p-133f)), 0x1p-133f);
  EXPECT_EQ(bf16(0.0).bits, 0);
  // Every bf16 is a float exactly: the round trip is the identity.
  for (uint32_t b = 0; b < 0x10000; ++b) {
    const bf16 x = bf16::from_bits(uint16_t(b));
    if (!std::isnan(float(x))) {
      ASSERT_EQ(bf16(float(x)).bits, b);
    }
  }
}

}  // namespace
}  // namespace mt
