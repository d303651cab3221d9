// Token stores in Megatron-LM's MMapIndexedDataset format, byte for byte, so
// Megatron reads our stores and we read Megatron's
// (megatron/core/datasets/indexed_dataset.py).
//
// PREFIX.idx, little endian, packed (no alignment padding):
//   magic     char[9]   "MMIDIDX\0\0"
//   version   uint64    1
//   dtype     uint8     token type code (DType below)
//   seq_count uint64    number of sequences
//   doc_count uint64    number of document-index entries (documents + 1)
//   sizes     int32[seq_count]   tokens in each sequence
//   pointers  int64[seq_count]   byte offset of each sequence in PREFIX.bin
//   doc_idx   int64[doc_count]   0, then the sequence index ending each document
// (Megatron's multimodal stores append int8 modes[seq_count]; ignored here.)
// PREFIX.bin: the tokens of all sequences back to back, in dtype.
//
// We write one sequence per document, so doc_idx is 0, 1, ..., n.
#pragma once

#include <cstdint>
#include <cstdio>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "data/mapped_file.h"

namespace mt::data {

// Megatron's dtype codes (class DType in indexed_dataset.py). Token stores
// use the integer ones; the float codes are recognised only to be rejected.
enum class DType : uint8_t {
  kUint8 = 1,
  kInt8 = 2,
  kInt16 = 3,
  kInt32 = 4,
  kInt64 = 5,
  kFloat64 = 6,
  kFloat32 = 7,
  kUint16 = 8,
};

inline constexpr char kIndexMagic[9] = {'M', 'M', 'I', 'D', 'I', 'D', 'X', '\0', '\0'};
inline constexpr uint64_t kIndexVersion = 1;
inline constexpr size_t kIndexHeaderBytes = 9 + 8 + 1 + 8 + 8;  // = 34

std::string idx_path(const std::string& prefix);  // PREFIX.idx
std::string bin_path(const std::string& prefix);  // PREFIX.bin

// Bytes of one token; throws for a code outside Megatron's table.
size_t dtype_size(DType dtype);
const char* dtype_name(DType dtype);  // "uint16", ...; "unknown" otherwise
// True for the integer codes a token store may use.
bool dtype_supported(DType dtype);
// Megatron's DType.optimal_dtype(vocab): uint16 below 65500 ids, else int32.
DType best_dtype_for_vocab(int vocab_size);

// Writes PREFIX.bin.tmp and PREFIX.idx.tmp and renames them to the real names
// in finalize(), .bin first, so a crash never leaves a half store under the
// real name. Destroyed without finalize(), it removes its .tmp files.
class IndexedDatasetWriter {
 public:
  // Throws naming the path if PREFIX.bin.tmp cannot be created (e.g. a
  // missing directory) or dtype is not an integer code.
  IndexedDatasetWriter(std::string prefix, DType dtype);
  ~IndexedDatasetWriter();
  IndexedDatasetWriter(IndexedDatasetWriter&&) noexcept = default;
  IndexedDatasetWriter& operator=(IndexedDatasetWriter&&) noexcept = default;
  IndexedDatasetWriter(const IndexedDatasetWriter&) = delete;
  IndexedDatasetWriter& operator=(const IndexedDatasetWriter&) = delete;

  // Appends one document as one sequence. Throws naming the prefix, document
  // and value if a token does not fit the dtype.
  void add_document(std::span<const int32_t> tokens);
  // Writes the index, syncs both files and renames them into place.
  void finalize();

  uint64_t num_documents() const { return sizes_.size(); }
  uint64_t num_tokens() const { return num_tokens_; }
  const std::string& prefix() const { return prefix_; }

 private:
  struct FileCloser {
    void operator()(std::FILE* f) const { std::fclose(f); }
  };

  std::string prefix_;
  DType dtype_;
  std::unique_ptr<std::FILE, FileCloser> bin_;  // null once finalized (or moved from)
  std::vector<int32_t> sizes_;       // [documents]
  uint64_t num_tokens_ = 0;
  std::vector<unsigned char> buf_;   // one document converted to dtype
};

// A store opened read-only through mmap (RAII, move-only). The whole index is
// validated on open; every error names the file at fault.
class IndexedDataset {
 public:
  explicit IndexedDataset(std::string prefix);
  IndexedDataset(IndexedDataset&&) noexcept = default;
  IndexedDataset& operator=(IndexedDataset&&) noexcept = default;
  IndexedDataset(const IndexedDataset&) = delete;
  IndexedDataset& operator=(const IndexedDataset&) = delete;

  const std::string& prefix() const { return prefix_; }
  DType dtype() const { return dtype_; }
  uint64_t num_sequences() const { return sizes_.size(); }
  uint64_t num_documents() const { return doc_idx_.size() - 1; }
  // Tokens of all sequences together: the length of the token stream.
  uint64_t num_tokens() const { return num_tokens_; }
  std::span<const int32_t> sequence_lengths() const { return sizes_; }  // [num_sequences]
  std::span<const int64_t> document_indices() const { return doc_idx_; }  // [num_documents + 1]

  // Tokens [start, start + count) of the stream of all sequences in storage
  // order, converted to int32; out: [count]. Throws if the range runs past
  // the end (or an int64 token does not fit int32).
  void read_tokens(uint64_t start, uint64_t count, int32_t* out) const;

  // Scans every token; throws naming the prefix, the document and the id if
  // any id is negative or >= vocab_size. Parallel (OpenMP), memory bound.
  void check_token_range(int vocab_size) const;

 private:
  // The document holding token `pos` of the stream.
  uint64_t document_of_token(uint64_t pos) const;

  std::string prefix_;
  DType dtype_ = DType::kUint16;
  std::vector<int32_t> sizes_;    // [num_sequences]
  std::vector<int64_t> doc_idx_;  // [num_documents + 1]
  uint64_t num_tokens_ = 0;
  MappedFile bin_;                // the .idx is copied out and unmapped on open
};

}  // namespace mt::data
