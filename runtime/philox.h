// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3").
// A counter-based generator: every draw is a pure function of (seed, stream,
// index), so any rank can make any element of any tensor or permutation
// without making the others.
#pragma once

#include <array>
#include <cmath>
#include <cstdint>
#include <string_view>

namespace mt {

inline std::array<uint32_t, 4> philox4x32(std::array<uint32_t, 4> ctr, std::array<uint32_t, 2> key) {
  constexpr uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u;
  constexpr uint32_t kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;
  for (int round = 0; round < 10; ++round) {
    uint64_t p0 = uint64_t(kM0) * ctr[0];
    uint64_t p1 = uint64_t(kM1) * ctr[2];
    ctr = {uint32_t(p1 >> 32) ^ ctr[1] ^ key[0], uint32_t(p1), uint32_t(p0 >> 32) ^ ctr[3] ^ key[1],
           uint32_t(p0)};
    key[0] += kW0;
    key[1] += kW1;
  }
  return ctr;
}

// Four random words for element `index` of stream `stream` under `seed`.
inline std::array<uint32_t, 4> philox_words(uint64_t seed, uint64_t stream, uint64_t index) {
  return philox4x32({uint32_t(index), uint32_t(index >> 32), uint32_t(stream), uint32_t(stream >> 32)},
                    {uint32_t(seed), uint32_t(seed >> 32)});
}

// Uniform in [0, 1) with 53 random bits.
inline double philox_uniform(uint64_t seed, uint64_t stream, uint64_t index) {
  auto w = philox_words(seed, stream, index);
  uint64_t bits = (uint64_t(w[0]) << 32 | w[1]) >> 11;
  return double(bits) * 0x1.0p-53;
}

// Standard normal by Box-Muller on two uniforms of one counter.
inline double philox_normal(uint64_t seed, uint64_t stream, uint64_t index) {
  auto w = philox_words(seed, stream, index);
  double u1 = (double((uint64_t(w[0]) << 32 | w[1]) >> 11) + 1.0) * 0x1.0p-53;  // (0, 1]
  double u2 = double((uint64_t(w[2]) << 32 | w[3]) >> 11) * 0x1.0p-53;         // [0, 1)
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2);
}

// Stable 64-bit FNV-1a hash: turns a tensor name into a stream id.
inline uint64_t stream_id(std::string_view name) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : name) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  return h;
}

}  // namespace mt
