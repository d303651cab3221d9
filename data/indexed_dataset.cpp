#include "data/indexed_dataset.h"

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <type_traits>
#include <unistd.h>

#include "runtime/check.h"

namespace mt::data {

// The files are little endian and we copy them as they are.
static_assert(std::endian::native == std::endian::little, "moetrain token stores need a little-endian host");

std::string idx_path(const std::string& prefix) { return prefix + ".idx"; }
std::string bin_path(const std::string& prefix) { return prefix + ".bin"; }

size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::kUint8: case DType::kInt8: return 1;
    case DType::kInt16: case DType::kUint16: return 2;
    case DType::kInt32: case DType::kFloat32: return 4;
    case DType::kInt64: case DType::kFloat64: return 8;
  }
  MT_FAIL("unknown token dtype code {}", int(dtype));
}

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::kUint8: return "uint8";
    case DType::kInt8: return "int8";
    case DType::kInt16: return "int16";
    case DType::kInt32: return "int32";
    case DType::kInt64: return "int64";
    case DType::kFloat64: return "float64";
    case DType::kFloat32: return "float32";
    case DType::kUint16: return "uint16";
  }
  return "unknown";
}

bool dtype_supported(DType dtype) {
  switch (dtype) {
    case DType::kUint8: case DType::kInt8: case DType::kInt16: case DType::kInt32:
    case DType::kInt64: case DType::kUint16:
      return true;
    default:
      return false;
  }
}

DType best_dtype_for_vocab(int vocab_size) {
  MT_CHECK(vocab_size > 0, "vocabulary size must be positive, got {}", vocab_size);
  return vocab_size < 65500 ? DType::kUint16 : DType::kInt32;
}

namespace {

// Calls f with a null pointer of the C++ type of an integer dtype.
template <class F>
decltype(auto) visit_dtype(DType dtype, F&& f) {
  switch (dtype) {
    case DType::kUint8: return f(static_cast<const uint8_t*>(nullptr));
    case DType::kInt8: return f(static_cast<const int8_t*>(nullptr));
    case DType::kInt16: return f(static_cast<const int16_t*>(nullptr));
    case DType::kUint16: return f(static_cast<const uint16_t*>(nullptr));
    case DType::kInt32: return f(static_cast<const int32_t*>(nullptr));
    case DType::kInt64: return f(static_cast<const int64_t*>(nullptr));
    default: break;
  }
  MT_FAIL("unsupported token dtype {} (code {})", dtype_name(dtype), int(dtype));
}

std::string errno_text() { return std::strerror(errno); }

void write_all(std::FILE* f, const void* data, size_t bytes, const std::string& path) {
  if (bytes == 0) return;
  MT_CHECK(std::fwrite(data, 1, bytes, f) == bytes, "cannot write {} bytes to {}: {}", bytes, path,
           errno_text());
}

// Flushes, syncs and closes; a crash after the rename must not leave a short file.
void close_synced(std::FILE* f, const std::string& path) {
  bool ok = std::fflush(f) == 0 && ::fsync(::fileno(f)) == 0;
  std::string err = ok ? "" : errno_text();
  ok = (std::fclose(f) == 0) && ok;
  MT_CHECK(ok, "cannot finish writing {}: {}", path, err.empty() ? errno_text() : err);
}

}  // namespace

// --- writer ----------------------------------------------------------------

IndexedDatasetWriter::IndexedDatasetWriter(std::string prefix, DType dtype)
    : prefix_(std::move(prefix)), dtype_(dtype) {
  MT_CHECK(dtype_supported(dtype), "token store {}: cannot write dtype {} (code {}); use an integer dtype",
           prefix_, dtype_name(dtype), int(dtype));
  std::string tmp = bin_path(prefix_) + ".tmp";
  bin_.reset(std::fopen(tmp.c_str(), "wb"));
  MT_CHECK(bin_ != nullptr, "cannot create {}: {}", tmp, errno_text());
}

IndexedDatasetWriter::~IndexedDatasetWriter() {
  if (!bin_) return;  // finalized or moved from
  bin_.reset();
  std::error_code ec;  // best effort: a destructor must not throw
  std::filesystem::remove(bin_path(prefix_) + ".tmp", ec);
  std::filesystem::remove(idx_path(prefix_) + ".tmp", ec);
}

void IndexedDatasetWriter::add_document(std::span<const int32_t> tokens) {
  MT_CHECK(bin_ != nullptr, "token store {}: add_document after finalize", prefix_);
  MT_CHECK(tokens.size() <= size_t(std::numeric_limits<int32_t>::max()),
           "token store {}: document {} has {} tokens, more than an int32 size can hold", prefix_,
           sizes_.size(), tokens.size());
  visit_dtype(dtype_, [&](auto* type_tag) {
    using T = std::remove_cvref_t<decltype(*type_tag)>;
    buf_.resize(tokens.size() * sizeof(T));
    T* out = reinterpret_cast<T*>(buf_.data());
    for (size_t i = 0; i < tokens.size(); ++i) {
      int32_t v = tokens[i];
      if constexpr (sizeof(T) < sizeof(int32_t)) {
        MT_CHECK(v >= int32_t(std::numeric_limits<T>::min()) && v <= int32_t(std::numeric_limits<T>::max()),
                 "token store {}: token {} at position {} of document {} does not fit dtype {}", prefix_,
                 v, i, sizes_.size(), dtype_name(dtype_));
      }
      out[i] = static_cast<T>(v);
    }
  });
  write_all(bin_.get(), buf_.data(), buf_.size(), bin_path(prefix_) + ".tmp");
  sizes_.push_back(static_cast<int32_t>(tokens.size()));
  num_tokens_ += tokens.size();
}

void IndexedDatasetWriter::finalize() {
  MT_CHECK(bin_ != nullptr, "token store {}: finalize called twice", prefix_);
  const std::string bin_tmp = bin_path(prefix_) + ".tmp";
  const std::string idx_tmp = idx_path(prefix_) + ".tmp";
  try {
    close_synced(bin_.release(), bin_tmp);

    std::unique_ptr<std::FILE, FileCloser> idx(std::fopen(idx_tmp.c_str(), "wb"));
    MT_CHECK(idx != nullptr, "cannot create {}: {}", idx_tmp, errno_text());
    const uint64_t seq_count = sizes_.size();
    const uint64_t doc_count = seq_count + 1;
    const uint8_t code = static_cast<uint8_t>(dtype_);
    // Header: 34 packed bytes.
    write_all(idx.get(), kIndexMagic, sizeof(kIndexMagic), idx_tmp);
    write_all(idx.get(), &kIndexVersion, 8, idx_tmp);
    write_all(idx.get(), &code, 1, idx_tmp);
    write_all(idx.get(), &seq_count, 8, idx_tmp);
    write_all(idx.get(), &doc_count, 8, idx_tmp);
    write_all(idx.get(), sizes_.data(), sizes_.size() * sizeof(int32_t), idx_tmp);
    // pointers: byte offset of each sequence; doc_idx: 0, 1, ..., n (one sequence a document).
    std::vector<int64_t> column(seq_count);
    const int64_t item = static_cast<int64_t>(dtype_size(dtype_));
    int64_t offset = 0;
    for (uint64_t s = 0; s < seq_count; ++s) {
      column[s] = offset;
      offset += int64_t(sizes_[s]) * item;
    }
    write_all(idx.get(), column.data(), column.size() * sizeof(int64_t), idx_tmp);
    column.resize(doc_count);
    for (uint64_t d = 0; d < doc_count; ++d) column[d] = int64_t(d);
    write_all(idx.get(), column.data(), column.size() * sizeof(int64_t), idx_tmp);
    close_synced(idx.release(), idx_tmp);

    // .bin first: the .idx under its real name marks the store complete, and
    // a stale .idx beside a new .bin fails the size check on open.
    const std::string bin = bin_path(prefix_), idx_final = idx_path(prefix_);
    MT_CHECK(std::rename(bin_tmp.c_str(), bin.c_str()) == 0, "cannot rename {} to {}: {}", bin_tmp, bin,
             errno_text());
    MT_CHECK(std::rename(idx_tmp.c_str(), idx_final.c_str()) == 0, "cannot rename {} to {}: {}", idx_tmp,
             idx_final, errno_text());
  } catch (...) {
    std::error_code ec;
    std::filesystem::remove(bin_tmp, ec);
    std::filesystem::remove(idx_tmp, ec);
    throw;
  }
}

// --- reader ----------------------------------------------------------------

namespace {

template <class T>
T load(const std::byte* p) {  // the index arrays are not aligned (34-byte header)
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

}  // namespace

IndexedDataset::IndexedDataset(std::string prefix) : prefix_(std::move(prefix)) {
  const std::string idx_file = idx_path(prefix_), bin_file = bin_path(prefix_);
  for (const std::string& f : {idx_file, bin_file}) {
    std::error_code ec;
    MT_CHECK(std::filesystem::exists(f, ec), "token store {}: missing file {}", prefix_, f);
  }
  MappedFile idx(idx_file);
  const std::byte* p = idx.data();
  const uint64_t size = idx.size();

  MT_CHECK(size >= sizeof(kIndexMagic) && std::memcmp(p, kIndexMagic, sizeof(kIndexMagic)) == 0,
           "{}: not a Megatron indexed dataset index (bad magic; expected \"MMIDIDX\\x00\\x00\")", idx_file);
  MT_CHECK(size >= kIndexHeaderBytes, "{}: truncated header ({} bytes, need {})", idx_file, size,
           kIndexHeaderBytes);
  const uint64_t version = load<uint64_t>(p + 9);
  MT_CHECK(version == kIndexVersion, "{}: unsupported index version {} (supported: {})", idx_file, version,
           kIndexVersion);
  const uint8_t code = load<uint8_t>(p + 17);
  dtype_ = static_cast<DType>(code);
  MT_CHECK(dtype_supported(dtype_), "{}: unsupported token dtype code {} ({}); supported: 1 uint8, 2 int8, "
           "3 int16, 4 int32, 5 int64, 8 uint16", idx_file, int(code), dtype_name(dtype_));
  const uint64_t seq_count = load<uint64_t>(p + 18);
  const uint64_t doc_count = load<uint64_t>(p + 26);

  // Arrays: sizes int32[seq], pointers int64[seq], doc_idx int64[doc].
  // Compared by division so that absurd counts cannot overflow.
  const uint64_t body = size - kIndexHeaderBytes;
  const bool fits = seq_count <= body / 12 && doc_count <= (body - 12 * seq_count) / 8;
  if (!fits) {
    // The bytes those counts need, saturated so the message cannot overflow.
    const bool huge = seq_count > (1ull << 58) || doc_count > (1ull << 59);
    const uint64_t need = huge ? std::numeric_limits<uint64_t>::max()
                               : kIndexHeaderBytes + 12 * seq_count + 8 * doc_count;
    MT_FAIL("{}: truncated: the header promises {} sequences and {} document indices, which need {} "
            "bytes, but the file has {}", idx_file, seq_count, doc_count, need, size);
  }
  const std::byte* sizes_at = p + kIndexHeaderBytes;
  const std::byte* pointers_at = sizes_at + 4 * seq_count;
  const std::byte* doc_idx_at = pointers_at + 8 * seq_count;

  sizes_.resize(seq_count);
  if (seq_count) std::memcpy(sizes_.data(), sizes_at, 4 * seq_count);
  doc_idx_.resize(doc_count);
  if (doc_count) std::memcpy(doc_idx_.data(), doc_idx_at, 8 * doc_count);

  // Sequences must lie back to back from byte 0: the stream of all tokens is
  // then the .bin itself, and Megatron's writer never does otherwise.
  const uint64_t item = dtype_size(dtype_);
  uint64_t tokens = 0;
  for (uint64_t s = 0; s < seq_count; ++s) {
    const int32_t n = sizes_[s];
    MT_CHECK(n >= 0, "{}: sequence {} has negative size {}", idx_file, s, n);
    const int64_t ptr = load<int64_t>(pointers_at + 8 * s);
    MT_CHECK(uint64_t(ptr) == tokens * item && ptr >= 0,
             "{}: sequence {} starts at byte {} of the .bin, but the sizes before it put it at {} "
             "(pointers not consistent with sizes)", idx_file, s, ptr, tokens * item);
    tokens += uint64_t(n);
  }
  num_tokens_ = tokens;

  MT_CHECK(doc_count >= 1 && doc_idx_[0] == 0, "{}: the document index must start with 0 (has {} entries{})",
           idx_file, doc_count, doc_count ? fmt::format(", first {}", doc_idx_[0]) : std::string());
  for (uint64_t d = 1; d < doc_count; ++d)
    MT_CHECK(doc_idx_[d] >= doc_idx_[d - 1], "{}: document index decreases at entry {} ({} after {})",
             idx_file, d, doc_idx_[d], doc_idx_[d - 1]);
  MT_CHECK(uint64_t(doc_idx_.back()) == seq_count,
           "{}: the document index ends at sequence {} but the store has {} sequences", idx_file,
           doc_idx_.back(), seq_count);

  bin_ = MappedFile(bin_file);
  MT_CHECK(bin_.size() == tokens * item,
           "{}: {} bytes, but {} describes {} tokens of {} = {} bytes (truncated .bin, or .bin and .idx "
           "from different stores)", bin_file, bin_.size(), idx_file, tokens, dtype_name(dtype_),
           tokens * item);
}

void IndexedDataset::read_tokens(uint64_t start, uint64_t count, int32_t* out) const {
  MT_CHECK(start <= num_tokens_ && count <= num_tokens_ - start,
           "token store {}: tokens [{}, {}) run past its end ({} tokens)", prefix_, start, start + count,
           num_tokens_);
  if (count == 0) return;
  visit_dtype(dtype_, [&](auto* type_tag) {
    using T = std::remove_cvref_t<decltype(*type_tag)>;
    // The mapping is page aligned and every token sits at a multiple of its size.
    const T* src = reinterpret_cast<const T*>(bin_.data()) + start;
    if constexpr (std::is_same_v<T, int32_t>) {
      std::memcpy(out, src, count * sizeof(int32_t));
    } else {
      for (uint64_t i = 0; i < count; ++i) {
        if constexpr (std::is_same_v<T, int64_t>) {
          MT_CHECK(src[i] >= std::numeric_limits<int32_t>::min() && src[i] <= std::numeric_limits<int32_t>::max(),
                   "token store {}: token {} (document {}) is {}, outside int32", prefix_, start + i,
                   document_of_token(start + i), src[i]);
        }
        out[i] = static_cast<int32_t>(src[i]);
      }
    }
  });
}

uint64_t IndexedDataset::document_of_token(uint64_t pos) const {
  // Slow path (errors only): walk the sizes to the sequence, then binary
  // search the document index for the document ending after it.
  uint64_t seq = 0, begin = 0;
  while (seq < sizes_.size() && begin + uint64_t(sizes_[seq]) <= pos) begin += uint64_t(sizes_[seq++]);
  auto it = std::upper_bound(doc_idx_.begin(), doc_idx_.end(), int64_t(seq));
  return uint64_t(it - doc_idx_.begin()) - 1;
}

void IndexedDataset::check_token_range(int vocab_size) const {
  MT_CHECK(vocab_size > 0, "token store {}: vocabulary size must be positive, got {}", prefix_, vocab_size);
  if (num_tokens_ == 0) return;
  visit_dtype(dtype_, [&](auto* type_tag) {
    using T = std::remove_cvref_t<decltype(*type_tag)>;
    // A type that cannot hold a bad id needs no scan (uint8 with vocab >= 256).
    if (std::numeric_limits<T>::min() >= 0 && int64_t(std::numeric_limits<T>::max()) < int64_t(vocab_size)) return;
    bin_.advise_willneed();
    const T* src = reinterpret_cast<const T*>(bin_.data());
    const int64_t n = int64_t(num_tokens_);
    // Min and max over all tokens: one vectorised pass, split over threads.
    T lo = std::numeric_limits<T>::max(), hi = std::numeric_limits<T>::min();
#pragma omp parallel for simd reduction(min : lo) reduction(max : hi) schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      lo = src[i] < lo ? src[i] : lo;
      hi = src[i] > hi ? src[i] : hi;
    }
    if (int64_t(lo) >= 0 && int64_t(hi) < int64_t(vocab_size)) return;
    for (int64_t i = 0; i < n; ++i) {
      const int64_t v = int64_t(src[i]);
      if (v < 0 || v >= vocab_size)
        MT_FAIL("token store {}: document {} holds token id {} (at token {} of the stream), outside the "
                "vocabulary [0, {})", prefix_, document_of_token(uint64_t(i)), v, i, vocab_size);
    }
  });
}

}  // namespace mt::data
