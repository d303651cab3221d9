// Block checksums: the documented two-level XXH3-64 hash, and the hash of a
// block read out of a larger block equals the hash of the block's own
// row-major copy (what the writer hashed).
#include "checkpoint/block_checksum.h"

#include <gtest/gtest.h>
#include <xxhash.h>

#include <algorithm>
#include <cstdint>
#include <random>
#include <vector>

namespace mt {
namespace {

// The row-major copy of block `inner` out of `data`, which holds `outer`.
std::vector<float> copy_block(const std::vector<float>& data, const ArrayBlock& outer, const ArrayBlock& inner) {
  std::vector<float> out;
  const auto& oc = outer.count;
  const auto& ic = inner.count;
  for (uint64_t i = 0; i < ic[0]; ++i)
    for (uint64_t j = 0; j < ic[1]; ++j)
      for (uint64_t k = 0; k < ic[2]; ++k) {
        const uint64_t a = inner.offset[0] - outer.offset[0] + i, b = inner.offset[1] - outer.offset[1] + j,
                       c = inner.offset[2] - outer.offset[2] + k;
        out.push_back(data[(a * oc[1] + b) * oc[2] + c]);
      }
  return out;
}

TEST(BlockChecksum, AnInnerBlockHashesAsItsOwnCopy) {
  const ArrayBlock outer{{2, 0, 1}, {5, 6, 7}};
  std::vector<float> data(5 * 6 * 7);
  std::mt19937 rng(3);
  for (float& x : data) x = std::uniform_real_distribution<float>(-1, 1)(rng);
  const std::vector<ArrayBlock> inners = {
      outer,                          // the whole block
      {{2, 0, 1}, {1, 6, 7}},         // a leading row
      {{3, 1, 2}, {2, 3, 4}},         // strided in every dimension
      {{6, 5, 7}, {1, 1, 1}},         // the last element
      {{4, 2, 1}, {3, 4, 7}},         // whole last dimension
      {{3, 0, 1}, {2, 6, 7}},         // whole rows: one contiguous span
      {{4, 2, 3}, {0, 4, 2}},         // empty
  };
  for (const ArrayBlock& inner : inners) {
    ASSERT_TRUE(block_contains(outer, inner));
    const std::vector<float> copy = copy_block(data, outer, inner);
    EXPECT_EQ(checksum_inner_block(data.data(), outer, inner, sizeof(float)),
              checksum_bytes(copy.data(), copy.size() * sizeof(float)))
        << "inner block at " << inner.offset[0] << "," << inner.offset[1] << "," << inner.offset[2];
  }
  // A changed element inside the block changes its hash; one outside does not.
  const ArrayBlock inner{{3, 1, 2}, {2, 3, 4}};
  const uint64_t before = checksum_inner_block(data.data(), outer, inner, sizeof(float));
  std::vector<float> changed = data;
  changed[(1 * 6 + 1) * 7 + 1] += 1;  // element (3, 1, 2): inside
  EXPECT_NE(checksum_inner_block(changed.data(), outer, inner, sizeof(float)), before);
  changed = data;
  changed[0] += 1;  // element (2, 0, 1): outside
  EXPECT_EQ(checksum_inner_block(changed.data(), outer, inner, sizeof(float)), before);
}

TEST(BlockChecksum, IsXxh3OfTheBytesOrOfTheChunkHashes) {
  std::vector<unsigned char> bytes(2 * kChecksumChunk + 12345);
  std::mt19937 rng(4);
  for (unsigned char& b : bytes) b = static_cast<unsigned char>(rng());
  // Up to one chunk: XXH3-64 of the bytes.
  EXPECT_EQ(checksum_bytes(bytes.data(), 100), XXH3_64bits(bytes.data(), 100));
  EXPECT_EQ(checksum_bytes(bytes.data(), kChecksumChunk), XXH3_64bits(bytes.data(), kChecksumChunk));
  // Longer: XXH3-64 of the chunks' hashes, 8 little-endian bytes each.
  std::vector<unsigned char> level2;
  for (size_t at = 0; at < bytes.size(); at += kChecksumChunk) {
    const uint64_t h = XXH3_64bits(bytes.data() + at, std::min(kChecksumChunk, bytes.size() - at));
    for (int b = 0; b < 8; ++b) level2.push_back(static_cast<unsigned char>(h >> (8 * b)));
  }
  ASSERT_EQ(level2.size(), 3u * 8);
  EXPECT_EQ(checksum_bytes(bytes.data(), bytes.size()), XXH3_64bits(level2.data(), level2.size()));
}

TEST(BlockChecksum, AStridedBlockOfManyChunksHashesAsItsCopy) {
  // [300, 1000] float (1.2 MB): the inner block [0:300, 1:1000] is 299
  // strided runs whose bytes cross chunk boundaries inside runs.
  const ArrayBlock outer{{0, 0, 0}, {300, 1000, 1}}, inner{{0, 1, 0}, {300, 999, 1}};
  std::vector<float> data(300 * 1000);
  std::mt19937 rng(5);
  for (float& x : data) x = std::uniform_real_distribution<float>(-1, 1)(rng);
  const std::vector<float> copy = copy_block(data, outer, inner);
  ASSERT_GT(copy.size() * sizeof(float), kChecksumChunk);
  EXPECT_EQ(checksum_inner_block(data.data(), outer, inner, sizeof(float)),
            checksum_bytes(copy.data(), copy.size() * sizeof(float)));
}

TEST(BlockChecksum, ScalarsAndContainment) {
  const double x = 2.5;
  EXPECT_EQ(checksum_inner_block(&x, ArrayBlock{}, ArrayBlock{}, sizeof x), checksum_bytes(&x, sizeof x));
  const ArrayBlock outer{{4, 0}, {3, 5}};
  EXPECT_TRUE(block_contains(outer, ArrayBlock{{4, 0}, {3, 5}}));
  EXPECT_TRUE(block_contains(outer, ArrayBlock{{6, 4}, {1, 1}}));
  EXPECT_FALSE(block_contains(outer, ArrayBlock{{3, 0}, {1, 5}}));  // starts before
  EXPECT_FALSE(block_contains(outer, ArrayBlock{{6, 4}, {1, 2}}));  // ends after
  EXPECT_FALSE(block_contains(outer, ArrayBlock{{4}, {3}}));        // another rank
}

}  // namespace
}  // namespace mt
