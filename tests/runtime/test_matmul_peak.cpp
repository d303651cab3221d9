// The matrix-product peak MFU is measured against (runtime/matmul_peak.h).
#include <gtest/gtest.h>

#include <chrono>

#include "runtime/cpu_backend.h"
#include "runtime/matmul_peak.h"

namespace mt {
namespace {

TEST(Stragglers, TheMatrixProductPeakIsMeasuredWithinItsBudget) {
  auto be = make_cpu_backend<float>();
  const auto start = std::chrono::steady_clock::now();
  const double gflops = measure_matmul_gflops(*be, 0.02);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_GT(gflops, 0.1);  // a 512^3 product in under 2.7 s
  EXPECT_LT(gflops, 1e6);  // and not in a nanosecond: it was computed
  // Two products at least, then it stops: far below a second on any CPU
  // that trains (this bounds the loop, it does not time the machine).
  EXPECT_LT(seconds, 10.0);
}

}  // namespace
}  // namespace mt
