// The samples of ONE token store and the order training reads them in
// (docs/design.md section 5). A sample is S + 1 consecutive tokens of the store's
// token stream: sample i is tokens [i*S, i*S + S], inputs the first S and
// targets the last S, so consecutive samples share one token and
// num_samples = (num_tokens - 1) / S (a short tail is never read).
//
// Training order: position n of the stream is sample perm_e[n % N] with
// e = n / N, N = num_samples; each epoch e is a fresh Fisher-Yates permutation
// driven by Philox under (seed, epoch). So the sample at n is a pure function
// of (seed, store, n): resuming needs only n, and every layout agrees.
//
// One source; data/blended_stream.h blends several, each with its own
// epoch count, on top of this class.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "data/indexed_dataset.h"

namespace mt::data {

class SampleStream {
 public:
  // Keeps a reference: `store` must outlive the stream. Throws naming the
  // prefix if the store holds fewer than seq_length + 1 tokens.
  SampleStream(const IndexedDataset& store, int seq_length, uint64_t seed);
  SampleStream(SampleStream&&) noexcept;
  SampleStream& operator=(SampleStream&&) noexcept;
  ~SampleStream();

  uint64_t num_samples() const { return num_samples_; }
  int seq_length() const { return seq_length_; }
  const IndexedDataset& store() const { return *store_; }

  // Sample i in storage order; out: [seq_length + 1] tokens.
  void read_sample(uint64_t i, int32_t* out) const;
  // The sample at position n of the training stream (any n >= 0). Thread
  // safe; permutations are built on first use and the last two kept, so a
  // batch that straddles an epoch boundary builds each only once.
  uint64_t sample_at(uint64_t n) const;

  // Epoch e's permutation of [0, num_samples), built from scratch (uncached).
  std::vector<uint64_t> epoch_permutation(uint64_t epoch) const;

 private:
  struct Cache;  // the cached permutations, behind a mutex

  const IndexedDataset* store_;
  int seq_length_;
  uint64_t seed_;
  uint64_t num_samples_;
  std::unique_ptr<Cache> cache_;
};

}  // namespace mt::data
