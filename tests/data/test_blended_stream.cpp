// The blended multi-epoch stream (docs/design.md section 5), checked over whole runs.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>
#include <random>
#include <set>

#include "data/batch_schedule.h"
#include "data/blended_stream.h"
#include "test_util.h"

namespace mt::data {
namespace {

constexpr int kSeq = 8;

// A store whose samples are recognisable: token t of the stream is t % 251.
void write_store(const std::string& prefix, int tokens) {
  IndexedDatasetWriter w(prefix, DType::kUint16);
  std::vector<int32_t> doc(tokens);
  std::iota(doc.begin(), doc.end(), 0);
  for (auto& t : doc) t %= 251;
  w.add_document(doc);
  w.finalize();
}

class Blend : public ::testing::Test {
 protected:
  void SetUp() override {
    write_store(dir / "text", 40 * kSeq + 1);  // 40 samples an epoch
    write_store(dir / "code", 25 * kSeq + 1);  // 25 samples an epoch
  }
  std::vector<SourceSpec> specs(double text_epochs, double code_epochs) {
    return {{"text", dir / "text", text_epochs}, {"code", dir / "code", code_epochs}};
  }
  test_util::TempDir dir;
};

TEST_F(Blend, EverySampleAppearsExactlyItsEpochsOverTheRun) {
  BlendedStream s(specs(2, 4), kSeq, 11);
  ASSERT_EQ(s.size(), 2u * 40 + 4u * 25);
  std::map<std::pair<int, uint64_t>, int> seen;
  for (uint64_t n = 0; n < s.size(); ++n) {
    auto p = s.pick(n);
    ++seen[{p.source, p.sample}];
  }
  for (uint64_t i = 0; i < 40; ++i) EXPECT_EQ((seen[{0, i}]), 2) << "text sample " << i;
  for (uint64_t i = 0; i < 25; ++i) EXPECT_EQ((seen[{1, i}]), 4) << "code sample " << i;
}

TEST_F(Blend, FractionalEpochTakesItsShareOfDistinctSamples) {
  BlendedStream s(specs(1.5, 2.2), kSeq, 3);
  ASSERT_EQ(s.source(0).total, 60u);  // floor(1.5 * 40)
  ASSERT_EQ(s.source(1).total, 55u);  // floor(2.2 * 25)
  std::map<std::pair<int, uint64_t>, int> seen;
  for (uint64_t n = 0; n < s.size(); ++n) {
    auto p = s.pick(n);
    ++seen[{p.source, p.sample}];
  }
  int text_twice = 0, code_thrice = 0;
  for (uint64_t i = 0; i < 40; ++i) {
    ASSERT_GE((seen[{0, i}]), 1);
    ASSERT_LE((seen[{0, i}]), 2);
    text_twice += seen[{0, i}] == 2;
  }
  for (uint64_t i = 0; i < 25; ++i) {
    ASSERT_GE((seen[{1, i}]), 2);
    ASSERT_LE((seen[{1, i}]), 3);
    code_thrice += seen[{1, i}] == 3;
  }
  EXPECT_EQ(text_twice, 20);  // the half epoch: 20 distinct samples
  EXPECT_EQ(code_thrice, 5);  // 0.2 of an epoch: 5 distinct samples
}

TEST_F(Blend, EachEpochIsAPermutationAndEpochsDiffer) {
  BlendedStream s(specs(2, 4), kSeq, 5);
  std::vector<std::vector<uint64_t>> order(2);
  for (uint64_t n = 0; n < s.size(); ++n) {
    auto p = s.pick(n);
    EXPECT_EQ(p.ordinal, order[p.source].size());
    order[p.source].push_back(p.sample);
  }
  const uint64_t per_epoch[2] = {40, 25};
  for (int src = 0; src < 2; ++src) {
    std::vector<std::vector<uint64_t>> epochs;
    for (size_t e = 0; e * per_epoch[src] < order[src].size(); ++e) {
      std::vector<uint64_t> ep(order[src].begin() + e * per_epoch[src], order[src].begin() + (e + 1) * per_epoch[src]);
      std::vector<uint64_t> sorted = ep;
      std::sort(sorted.begin(), sorted.end());
      for (uint64_t i = 0; i < per_epoch[src]; ++i) ASSERT_EQ(sorted[i], i) << "source " << src << " epoch " << e;
      epochs.push_back(ep);
    }
    for (size_t e = 1; e < epochs.size(); ++e) EXPECT_NE(epochs[e], epochs[e - 1]) << "source " << src;
  }
  // The two sources are not shuffled alike.
  EXPECT_NE(std::vector<uint64_t>(order[0].begin(), order[0].begin() + 25),
            std::vector<uint64_t>(order[1].begin(), order[1].begin() + 25));
}

TEST_F(Blend, EveryPrefixHoldsEachSourceWithinHalfASampleOfItsShare) {
  BlendedStream s(specs(2, 4), kSeq, 1);
  const double share[2] = {80.0 / 180.0, 100.0 / 180.0};
  std::vector<uint64_t> count(2, 0);
  for (uint64_t n = 0; n <= s.size(); ++n) {
    EXPECT_EQ(s.counts_before(n), count);
    // Two sources: the bound 1 - 1/(2(S-1)) is 1/2.
    for (int src = 0; src < 2; ++src) EXPECT_LE(std::abs(double(count[src]) - n * share[src]), 0.5) << n;
    if (n < s.size()) ++count[s.pick(n).source];
  }
}

TEST(BlendOrder, BoundHoldsForManyUnevenSources) {
  std::vector<std::vector<uint64_t>> cases = {
      {1, 7, 1000, 333, 2048}, {3, 3, 3}, {1, 1}, {5, 1000}, {17, 19, 23, 29, 31, 37, 41, 43}};
  std::mt19937 rng(5);
  for (int i = 0; i < 200; ++i) {  // random blends of 2 to 9 sources
    std::vector<uint64_t> totals(2 + rng() % 8);
    for (auto& t : totals) t = 1 + rng() % 300;
    cases.push_back(totals);
  }
  for (const auto& totals : cases) {
    auto order = blend_order(totals);
    const double total = std::accumulate(totals.begin(), totals.end(), 0.0);
    const double bound = 1.0 - 1.0 / (2.0 * double(totals.size() - 1));
    std::vector<uint64_t> count(totals.size(), 0);
    double worst = 0;
    for (size_t n = 0; n < order.size(); ++n) {
      ++count[order[n]];
      for (size_t s = 0; s < totals.size(); ++s)
        worst = std::max(worst, std::abs(double(count[s]) - double(n + 1) * double(totals[s]) / total));
    }
    EXPECT_LE(worst, bound + 1e-9) << totals.size() << " sources";
    for (size_t s = 0; s < totals.size(); ++s) EXPECT_EQ(count[s], totals[s]);
  }
}

TEST_F(Blend, PureFunctionOfSeedSourcesAndPosition) {
  BlendedStream a(specs(2, 4), kSeq, 9), b(specs(2, 4), kSeq, 9), c(specs(2, 4), kSeq, 10);
  std::vector<int32_t> x(kSeq + 1), y(kSeq + 1);
  int differ = 0;
  // b is read backwards: the order of reads does not matter.
  for (uint64_t n = a.size(); n-- > 0;) {
    a.read(n, x.data());
    b.read(a.size() - 1 - n, y.data());
    auto pa = a.pick(a.size() - 1 - n), pb = b.pick(a.size() - 1 - n);
    EXPECT_EQ(pa.source, pb.source);
    EXPECT_EQ(pa.sample, pb.sample);
    differ += c.pick(n).sample != a.pick(n).sample;
  }
  EXPECT_GT(differ, 0) << "another seed must give another order";
  // Sample contents: S + 1 consecutive tokens of the store.
  auto p = a.pick(17);
  a.read(17, x.data());
  for (int i = 0; i <= kSeq; ++i) EXPECT_EQ(x[i], int32_t((p.sample * kSeq + i) % 251));
}

TEST_F(Blend, RestartedStreamContinuesIdentically) {
  BlendedStream whole(specs(2, 4), kSeq, 21);
  std::vector<std::pair<int, uint64_t>> first;
  for (uint64_t n = 0; n < whole.size(); ++n) first.push_back({whole.pick(n).source, whole.pick(n).sample});
  for (uint64_t restart : {1ull, 77ull, 150ull}) {
    BlendedStream resumed(specs(2, 4), kSeq, 21);  // a new process, knowing only the position
    for (uint64_t n = restart; n < resumed.size(); ++n) {
      auto p = resumed.pick(n);
      ASSERT_EQ(std::make_pair(p.source, p.sample), first[n]) << "restart " << restart << " position " << n;
    }
  }
}

TEST(SamplePosition, EveryDataParallelSizeReadsTheSameGlobalBatch) {
  const int64_t consumed = 96, global = 48, micro = 2;
  for (int64_t dp : {1, 2, 3, 4, 6, 8}) {
    if (global % (dp * micro)) continue;
    std::vector<int64_t> positions;
    for (int64_t r = 0; r < dp; ++r)
      for (int64_t j = 0; j < global / (dp * micro); ++j)
        for (int64_t i = 0; i < micro; ++i)
          positions.push_back(sample_position(consumed, global, r, dp, j, micro, i));
    std::vector<int64_t> expected(global);
    std::iota(expected.begin(), expected.end(), consumed);
    EXPECT_EQ(positions, expected) << "DP=" << dp;  // rank r's slice is the r-th contiguous block
  }
}

TEST_F(Blend, SingleBareSourceRepeatsAsNeeded) {
  BlendedStream s({{"data", dir / "code", 0.0}}, kSeq, 2);
  EXPECT_EQ(s.size(), BlendedStream::kUnbounded);
  std::map<uint64_t, int> seen;
  for (uint64_t n = 0; n < 25 * 7; ++n) ++seen[s.pick(n).sample];
  for (uint64_t i = 0; i < 25; ++i) EXPECT_EQ(seen[i], 7);
  EXPECT_EQ(s.counts_before(60), std::vector<uint64_t>{60});
}

TEST_F(Blend, StoreShorterThanOneSampleIsNamed) {
  write_store(dir / "tiny", kSeq);  // S tokens: one short of a sample
  test_util::expect_error([&] { BlendedStream s({{"tiny", dir / "tiny", 1.0}}, kSeq, 1); },
                          {"tiny", "needs at least 9 tokens"});
}

TEST_F(Blend, PositionPastTheEndIsAnError) {
  BlendedStream s(specs(1, 1), kSeq, 1);
  test_util::expect_error([&] { s.pick(s.size()); }, {"past the end"});
}

}  // namespace
}  // namespace mt::data
