// bfloat16: the upper 16 bits of a float32 (8 exponent bits, 7 mantissa
// bits), the storage type of weights and activations under --bf16
// (docs/design.md, "Mixed precision"). Arithmetic happens in float32: a
// bf16 converts to float exactly, and a float rounds to the nearest bf16,
// ties to even, as oneDNN, PyTorch and CUDA's __float2bfloat16 do.
#pragma once

#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>

namespace mt {

struct bf16 {
  uint16_t bits = 0;

  bf16() = default;
  // Implicit both ways, so that kernels written for float compile for bf16
  // with every sum still formed in float (or double).
  template <typename F, std::enable_if_t<std::is_arithmetic_v<F>, int> = 0>
  bf16(F value)  // NOLINT(google-explicit-constructor)
      : bits(std::is_same_v<F, float> ? round_bits(float(value)) : round_bits(double(value))) {}
  operator float() const {  // NOLINT(google-explicit-constructor)
    const uint32_t u = uint32_t(bits) << 16;
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
  }
  // Compound assignment computes in float and rounds once.
  bf16& operator+=(float v) { return *this = bf16(float(*this) + v); }
  bf16& operator-=(float v) { return *this = bf16(float(*this) - v); }
  bf16& operator*=(float v) { return *this = bf16(float(*this) * v); }

  static bf16 from_bits(uint16_t b) {
    bf16 x;
    x.bits = b;
    return x;
  }

  // Round to nearest even on the upper half; a NaN stays a (quiet) NaN.
  // A select, not a branch, so that loops storing bf16 vectorize.
  static uint16_t round_bits(float f) {
    uint32_t u;
    std::memcpy(&u, &f, sizeof u);
    const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    const uint32_t quiet_nan = (u >> 16) | 0x0040u;
    return uint16_t((u & 0x7fffffffu) > 0x7f800000u ? quiet_nan : rounded);
  }
  // A double rounds once: when rounding it to float lands exactly on a bf16
  // tie, the double lies on one side of that tie, and that side decides.
  static uint16_t round_bits(double d) {
    const float f = float(d);
    uint32_t u;
    std::memcpy(&u, &f, sizeof u);
    const bool finite = (u & 0x7f800000u) != 0x7f800000u;
    if (finite && (u & 0xffffu) == 0x8000u && double(f) != d) {
      const bool beyond = (d > 0) == (d > double(f));  // |d| > |f|
      return uint16_t((u >> 16) + (beyond ? 1u : 0u));
    }
    return round_bits(f);
  }
};

static_assert(sizeof(bf16) == 2 && std::is_trivially_copyable_v<bf16>);

// The spacing of T's values at 1: 2^-7 for bf16's 8 significant bits.
template <typename T>
constexpr double epsilon_of() {
  if constexpr (std::is_same_v<T, bf16>) {
    return 0x1p-7;
  } else {
    return double(std::numeric_limits<T>::epsilon());
  }
}

// The type sums, statistics, losses, parameter gradients, master weights and
// optimizer moments are kept in when the model computes in T: float32 for
// bf16, T itself otherwise.
template <typename T>
using acc_t = std::conditional_t<std::is_same_v<T, bf16>, float, T>;

}  // namespace mt
