// Checksums of the blocks of a row-major array (what H5File writes and
// verifies, checkpoint/hdf5_file.h). A block's checksum is a function of its
// bytes in row-major order, so it is the same whether hashed where it was
// written (a contiguous buffer of the block) or inside a larger block read
// back.
//
// The hash: the bytes are cut into chunks of kChecksumChunk bytes (the last
// one shorter); a block of one chunk (or none) hashes to XXH3-64 of its
// bytes, a longer one to XXH3-64 of its chunks' XXH3-64 values (each as 8
// little-endian bytes, in order). The chunks hash in parallel (OpenMP): a
// save or load touches every byte once more, at a fraction of its time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace mt {

constexpr size_t kChecksumChunk = size_t(1) << 20;  // 1 MiB

struct ArrayBlock {
  std::vector<uint64_t> offset, count;  // the block [offset, offset + count) of an array
};

// Whether `inner` lies inside `outer` (both of the same rank).
bool block_contains(const ArrayBlock& outer, const ArrayBlock& inner);

// The checksum of `bytes` contiguous bytes.
uint64_t checksum_bytes(const void* data, size_t bytes);

// The checksum of block `inner` (inside `outer`, block_contains) read out of
// `data`, which holds block `outer` row-major with elements of elem_bytes:
// equal to checksum_bytes of `inner`'s own row-major copy.
uint64_t checksum_inner_block(const void* data, const ArrayBlock& outer, const ArrayBlock& inner, size_t elem_bytes);

}  // namespace mt
