// The training stream of docs/design.md section 5: several sources, each seen for
// its number of epochs, interleaved in proportion to their share of the run.
// Position n of the stream is a pure function of (seed, sources, n): resuming
// needs only the consumed-sample count, and every layout reads the same
// stream (data-parallel rank r takes the r-th slice of each global batch).
//
// Source s contributes T_s = floor(epochs_s * N_s) samples (N_s per epoch);
// its j-th sample is sample perm_{s,e}[j mod N_s] of epoch e = j / N_s, each
// epoch a fresh permutation (SampleStream, seeded per source), so a
// fractional last epoch is a random subset of the store. The order of
// sources is blend_order(): after any n positions, source s has been picked
// within 1 - 1/(2(S-1)) samples of n * T_s / T (S sources, S > 1).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "data/data_sources.h"
#include "data/indexed_dataset.h"
#include "data/sample_stream.h"

namespace mt::data {

// Source of each of the sum(totals) positions, spreading each source evenly
// over the whole run (earliest deadline first; ties: the lower index).
std::vector<uint8_t> blend_order(const std::vector<uint64_t>& totals);

class BlendedStream {
 public:
  static constexpr uint64_t kUnbounded = UINT64_MAX;

  struct Source {
    Source(const SourceSpec& spec, int seq_length, uint64_t seed);
    SourceSpec spec;
    IndexedDataset store;
    SampleStream samples;  // refers to store: Source is never moved (held by unique_ptr)
    uint64_t total;        // samples over the run; kUnbounded without an epoch count
  };

  BlendedStream(const std::vector<SourceSpec>& sources, int seq_length, uint64_t seed);

  // Samples in the whole run; kUnbounded for one source without an epoch count.
  uint64_t size() const { return size_; }
  int num_sources() const { return int(sources_.size()); }
  const Source& source(int s) const { return *sources_[s]; }

  struct Pick {
    int source = 0;
    uint64_t ordinal = 0;  // how many samples of this source come before it
    uint64_t sample = 0;   // index in the source's store, in storage order
  };
  Pick pick(uint64_t n) const;  // n < size()
  void read(uint64_t n, int32_t* out) const;  // out: [seq_length + 1]
  // Samples of each source among positions [0, n).
  std::vector<uint64_t> counts_before(uint64_t n) const;

 private:
  static constexpr uint64_t kBlock = 1024;  // positions between stored counts

  std::vector<std::unique_ptr<Source>> sources_;
  uint64_t size_ = 0;
  std::vector<uint8_t> order_;                // [size] source of each position
  std::vector<uint64_t> block_counts_;        // [size / kBlock + 1][sources] counts before each block
};

}  // namespace mt::data
