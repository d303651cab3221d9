#include "checkpoint/block_checksum.h"

#include <xxhash.h>

#include <algorithm>
#include <memory>

#include "runtime/check.h"

namespace mt {

namespace {

// The checksum of a sequence of chunk hashes (the second level of the hash).
uint64_t combine(const std::vector<uint64_t>& chunks) {
  std::vector<unsigned char> bytes(chunks.size() * 8);
  for (size_t i = 0; i < chunks.size(); ++i)
    for (int b = 0; b < 8; ++b) bytes[i * 8 + size_t(b)] = static_cast<unsigned char>(chunks[i] >> (8 * b));
  return XXH3_64bits(bytes.data(), bytes.size());
}

// Bytes fed in pieces (the runs of a strided block), hashed as
// checksum_bytes hashes them in one piece.
class ChunkedHash {
 public:
  ChunkedHash() : state_(XXH3_createState(), XXH3_freeState) {
    MT_CHECK(state_ && XXH3_64bits_reset(state_.get()) == XXH_OK, "cannot start an XXH3 hash");
  }
  void update(const char* p, size_t n) {
    while (n > 0) {
      const size_t take = std::min(n, kChecksumChunk - in_chunk_);
      XXH3_64bits_update(state_.get(), p, take);
      in_chunk_ += take;
      p += take;
      n -= take;
      if (in_chunk_ == kChecksumChunk) finish_chunk();
    }
  }
  uint64_t digest() {
    if (in_chunk_ > 0 || chunks_.empty()) finish_chunk();
    return chunks_.size() == 1 ? chunks_[0] : combine(chunks_);
  }

 private:
  void finish_chunk() {
    chunks_.push_back(XXH3_64bits_digest(state_.get()));
    XXH3_64bits_reset(state_.get());
    in_chunk_ = 0;
  }
  std::unique_ptr<XXH3_state_t, decltype(&XXH3_freeState)> state_;
  size_t in_chunk_ = 0;
  std::vector<uint64_t> chunks_;
};

}  // namespace

bool block_contains(const ArrayBlock& outer, const ArrayBlock& inner) {
  if (outer.offset.size() != inner.offset.size()) return false;
  for (size_t d = 0; d < outer.offset.size(); ++d)
    if (inner.offset[d] < outer.offset[d] || inner.offset[d] + inner.count[d] > outer.offset[d] + outer.count[d])
      return false;
  return true;
}

uint64_t checksum_bytes(const void* data, size_t bytes) {
  if (bytes <= kChecksumChunk) return XXH3_64bits(data, bytes);
  std::vector<uint64_t> chunks((bytes + kChecksumChunk - 1) / kChecksumChunk);
  const char* p = static_cast<const char*>(data);
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < chunks.size(); ++i)
    chunks[i] = XXH3_64bits(p + i * kChecksumChunk, std::min(kChecksumChunk, bytes - i * kChecksumChunk));
  return combine(chunks);
}

uint64_t checksum_inner_block(const void* data, const ArrayBlock& outer, const ArrayBlock& inner, size_t elem_bytes) {
  const size_t rank = outer.offset.size();
  if (rank == 0) return checksum_bytes(data, elem_bytes);  // a scalar
  // Whole in every dimension but the first: one contiguous span (the
  // common case: a block read as it was written).
  if (std::equal(inner.count.begin() + 1, inner.count.end(), outer.count.begin() + 1)) {
    uint64_t row = elem_bytes;
    for (size_t d = 1; d < rank; ++d) row *= outer.count[d];
    return checksum_bytes(static_cast<const char*>(data) + (inner.offset[0] - outer.offset[0]) * row,
                          inner.count[0] * row);
  }
  // Otherwise runs of `inner`'s last dimension are contiguous in `outer`;
  // walk them in row-major order.
  uint64_t runs = 1;
  for (size_t d = 0; d + 1 < rank; ++d) runs *= inner.count[d];
  if (runs == 0 || inner.count[rank - 1] == 0) return checksum_bytes(data, 0);
  ChunkedHash hash;
  std::vector<uint64_t> at(rank, 0);  // index into inner, last dimension fixed at 0
  const size_t run_bytes = inner.count[rank - 1] * elem_bytes;
  for (uint64_t r = 0; r < runs; ++r) {
    uint64_t element = 0;  // row-major index in outer of the run's first element
    for (size_t d = 0; d < rank; ++d) element = element * outer.count[d] + (inner.offset[d] - outer.offset[d] + at[d]);
    hash.update(static_cast<const char*>(data) + element * elem_bytes, run_bytes);
    for (size_t d = rank - 1; d-- > 0;) {  // next run: odometer over the leading dimensions
      if (++at[d] < inner.count[d]) break;
      at[d] = 0;
    }
  }
  return hash.digest();
}

}  // namespace mt
