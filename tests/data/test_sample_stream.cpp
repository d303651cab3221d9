#include "data/sample_stream.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>

#include "test_util.h"

namespace mt::data {
namespace {

using test_util::expect_error;
using test_util::TempDir;

// A store whose token at stream position p is p (int32), cut into documents.
std::string counting_store(const TempDir& dir, const std::string& name, int32_t tokens) {
  const std::string prefix = dir / name;
  IndexedDatasetWriter writer(prefix, DType::kInt32);
  std::vector<int32_t> doc;
  for (int32_t p = 0; p < tokens; ++p) {
    doc.push_back(p);
    if (doc.size() == 7 || p == tokens - 1) {  // documents do not line up with samples
      writer.add_document(doc);
      doc.clear();
    }
  }
  writer.finalize();
  return prefix;
}

TEST(SampleStream, SamplesOverlapByOneToken) {
  TempDir dir;
  IndexedDataset store(counting_store(dir, "s", 23));
  SampleStream stream(store, 4, 1234);
  EXPECT_EQ(stream.num_samples(), 5u);  // (23 - 1) / 4
  std::vector<int32_t> sample(5), next(5);
  for (uint64_t i = 0; i < stream.num_samples(); ++i) {
    stream.read_sample(i, sample.data());
    for (int t = 0; t <= 4; ++t) EXPECT_EQ(sample[t], int32_t(4 * i + t));
    if (i + 1 < stream.num_samples()) {
      stream.read_sample(i + 1, next.data());
      EXPECT_EQ(sample[4], next[0]);  // last target = next first input
    }
  }
  expect_error([&] { stream.read_sample(5, sample.data()); }, {store.prefix(), "sample 5"});

  // Exactly S + 1 tokens: one sample.
  IndexedDataset exact(counting_store(dir, "exact", 5));
  EXPECT_EQ(SampleStream(exact, 4, 0).num_samples(), 1u);
}

TEST(SampleStream, EachEpochIsAPermutationAndEpochsDiffer) {
  TempDir dir;
  IndexedDataset store(counting_store(dir, "p", 1001));
  SampleStream stream(store, 1, 42);
  const uint64_t n = stream.num_samples();
  ASSERT_EQ(n, 1000u);
  std::vector<std::vector<uint64_t>> epochs(3);
  for (uint64_t e = 0; e < 3; ++e) {
    for (uint64_t k = 0; k < n; ++k) epochs[e].push_back(stream.sample_at(e * n + k));
    std::vector<uint64_t> sorted = epochs[e];
    std::sort(sorted.begin(), sorted.end());
    std::vector<uint64_t> identity(n);
    std::iota(identity.begin(), identity.end(), uint64_t{0});
    EXPECT_EQ(sorted, identity) << "epoch " << e;  // every sample exactly once
    EXPECT_EQ(epochs[e], stream.epoch_permutation(e));
  }
  EXPECT_NE(epochs[0], epochs[1]);
  EXPECT_NE(epochs[1], epochs[2]);
  std::vector<uint64_t> identity(n);
  std::iota(identity.begin(), identity.end(), uint64_t{0});
  EXPECT_NE(epochs[0], identity);
  // Another seed, another order.
  EXPECT_NE(SampleStream(store, 1, 43).epoch_permutation(0), epochs[0]);
}

TEST(SampleStream, PureFunctionOfSeedStoreAndPosition) {
  TempDir dir;
  IndexedDataset store(counting_store(dir, "f", 301));
  SampleStream a(store, 3, 7), b(store, 3, 7);
  const uint64_t total = 5 * a.num_samples();
  std::vector<uint64_t> forward(total);
  for (uint64_t n = 0; n < total; ++n) forward[n] = a.sample_at(n);
  // Backwards, and jumping between epochs, through a cache of two.
  for (uint64_t n = total; n-- > 0;) EXPECT_EQ(b.sample_at(n), forward[n]) << n;
  for (uint64_t k = 0; k < total; ++k) {
    const uint64_t n = (k * 7919) % total;
    ASSERT_EQ(b.sample_at(n), forward[n]) << n;
  }
  SampleStream moved = std::move(b);
  EXPECT_EQ(moved.sample_at(total + 3), a.sample_at(total + 3));
}

TEST(SampleStream, TooShortStore) {
  TempDir dir;
  IndexedDataset store(counting_store(dir, "short", 100));
  expect_error([&] { SampleStream(store, 256, 0); },
               {"sequence length 256 needs at least 257 tokens, store " + store.prefix() + " has 100"});
  expect_error([&] { SampleStream(store, 100, 0); }, {"needs at least 101 tokens"});
  expect_error([&] { SampleStream(store, 0, 0); }, {store.prefix(), "must be positive"});
}

}  // namespace
}  // namespace mt::data
