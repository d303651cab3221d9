#include "data/blended_stream.h"

#include <cmath>

#include "runtime/check.h"
#include "runtime/philox.h"

namespace mt::data {

std::vector<uint8_t> blend_order(const std::vector<uint64_t>& totals) {
  const size_t S = totals.size();
  MT_CHECK(S >= 1 && S <= 255, "blending needs 1 to 255 sources, got {}", S);
  uint64_t total = 0;
  for (uint64_t t : totals) total += t;
  // Tijdeman's rule (R. Tijdeman, "The chairman assignment problem", 1980):
  // with rates r_s = T_s / T and delta = 1 / (2 (S - 1)), position n goes to
  // the source whose next sample is due first, due = (c_s + 1 - delta) / r_s,
  // among those at least delta behind their share: (n + 1) r_s - c_s >= delta.
  // This keeps |c_s(n) - n r_s| <= 1 - delta for every source and prefix.
  // Everything is scaled by 2 (S - 1) T to compare in exact integers.
  const __int128 k = S > 1 ? 2 * __int128(S - 1) : 1;
  std::vector<uint8_t> order(total);
  std::vector<uint64_t> count(S, 0);
  for (uint64_t n = 0; n < total; ++n) {
    int best = -1;
    for (size_t s = 0; s < S; ++s) {
      if (count[s] == totals[s]) continue;
      const __int128 behind = k * (__int128(n + 1) * totals[s] - __int128(count[s]) * total);
      if (S > 1 && behind < __int128(total)) continue;  // less than delta behind
      // due_s < due_best  <=>  (k (c_s + 1) - 1) T_best < (k (c_best + 1) - 1) T_s
      if (best < 0 || (k * (count[s] + 1) - 1) * __int128(totals[best]) <
                          (k * (count[best] + 1) - 1) * __int128(totals[s]))
        best = int(s);
    }
    MT_CHECK(best >= 0, "blend_order: no source eligible at position {}", n);
    order[n] = uint8_t(best);
    ++count[best];
  }
  return order;
}

BlendedStream::Source::Source(const SourceSpec& s, int seq_length, uint64_t seed)
    : spec(s),
      store(s.prefix),
      // Each source its own permutations: the seed is mixed with the name.
      samples(store, seq_length, seed ^ stream_id("data/source/" + s.name)),
      total(kUnbounded) {
  if (s.epochs > 0) {
    const double t = std::floor(s.epochs * double(samples.num_samples()));
    MT_CHECK(t >= 1, "source '{}': {} epochs of {} samples is less than one sample", s.name,
             s.epochs, samples.num_samples());
    total = uint64_t(t);
  }
}

BlendedStream::BlendedStream(const std::vector<SourceSpec>& specs, int seq_length, uint64_t seed) {
  MT_CHECK(!specs.empty(), "no data sources");
  for (const SourceSpec& s : specs) sources_.push_back(std::make_unique<Source>(s, seq_length, seed));
  if (sources_.size() == 1 && sources_[0]->total == kUnbounded) {
    size_ = kUnbounded;
    return;
  }
  std::vector<uint64_t> totals;
  for (const auto& s : sources_) totals.push_back(s->total);
  order_ = blend_order(totals);
  size_ = order_.size();
  const size_t S = sources_.size();
  block_counts_.assign((size_ / kBlock + 1) * S, 0);
  std::vector<uint64_t> count(S, 0);
  for (uint64_t n = 0; n < size_; ++n) {
    if (n % kBlock == 0) std::copy(count.begin(), count.end(), block_counts_.begin() + (n / kBlock) * S);
    ++count[order_[n]];
  }
  if (size_ % kBlock == 0) std::copy(count.begin(), count.end(), block_counts_.begin() + (size_ / kBlock) * S);
}

std::vector<uint64_t> BlendedStream::counts_before(uint64_t n) const {
  if (size_ == kUnbounded) return {n};
  MT_CHECK(n <= size_, "stream position {} is past the end of the data ({} samples)", n, size_);
  const size_t S = sources_.size();
  const uint64_t block = n / kBlock;
  std::vector<uint64_t> count(block_counts_.begin() + block * S, block_counts_.begin() + (block + 1) * S);
  for (uint64_t i = block * kBlock; i < n; ++i) ++count[order_[i]];
  return count;
}

BlendedStream::Pick BlendedStream::pick(uint64_t n) const {
  Pick p;
  if (size_ == kUnbounded) {
    p.ordinal = n;
  } else {
    MT_CHECK(n < size_, "stream position {} is past the end of the data ({} samples)", n, size_);
    p.source = order_[n];
    p.ordinal = counts_before(n)[p.source];
  }
  p.sample = sources_[p.source]->samples.sample_at(p.ordinal);
  return p;
}

void BlendedStream::read(uint64_t n, int32_t* out) const {
  const Pick p = pick(n);
  sources_[p.source]->samples.read_sample(p.sample, out);
}

}  // namespace mt::data
