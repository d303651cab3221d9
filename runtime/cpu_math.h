// exp and tanh for the CPU backend's loops. In float: Cephes' expf
// polynomial (about 1 ulp) after the reduction x = n ln 2 + r, only
// arithmetic and bit operations, so that a loop over it vectorizes where
// std::exp and std::tanh are scalar library calls (most of the time of
// GELU and of attention's softmax otherwise). In double: the library's.
#pragma once

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>

namespace mt {

inline float exp_of(float x) {
  x = std::min(std::max(x, -87.0f), 88.0f);  // the float range of the result
  const int32_t n = int32_t(std::nearbyint(x * 1.44269504088896341f));
  const float r = (x - float(n) * 0.693359375f) - float(n) * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  return (p * r * r + r + 1.0f) * std::bit_cast<float>((n + 127) << 23);
}
inline double exp_of(double x) { return std::exp(x); }

// tanh z = 1 - 2 / (exp(2 z) + 1): near 0 its absolute error stays within
// 2 ulps of 1, which GELU's 0.5 x (1 + tanh) needs.
inline float tanh_of(float z) { return 1.0f - 2.0f / (exp_of(2.0f * z) + 1.0f); }
inline double tanh_of(double z) { return std::tanh(z); }

}  // namespace mt
