#include "data/indexed_dataset.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <numeric>

#include "test_util.h"

namespace mt::data {
namespace {

using test_util::expect_error;
using test_util::read_bytes;
using test_util::TempDir;
using test_util::write_bytes;

// Little-endian appends, spelled out byte by byte from the format spec.
void put_u8(std::vector<uint8_t>& b, uint8_t v) { b.push_back(v); }
void put_le(std::vector<uint8_t>& b, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) b.push_back(uint8_t(v >> (8 * i)));
}
void put_i32(std::vector<uint8_t>& b, int32_t v) { put_le(b, uint32_t(v), 4); }
void put_i64(std::vector<uint8_t>& b, int64_t v) { put_le(b, uint64_t(v), 8); }

std::vector<uint8_t> header(uint8_t code, uint64_t seqs, uint64_t docs) {
  std::vector<uint8_t> b = {'M', 'M', 'I', 'D', 'I', 'D', 'X', 0, 0};
  put_le(b, 1, 8);  // version
  put_u8(b, code);
  put_le(b, seqs, 8);
  put_le(b, docs, 8);
  return b;
}

std::vector<std::vector<int32_t>> three_docs() { return {{1, 2, 3}, {256}, {7, 65535}}; }

std::string write_store(const TempDir& dir, const std::string& name, DType dtype,
                        const std::vector<std::vector<int32_t>>& docs) {
  const std::string prefix = dir / name;
  IndexedDatasetWriter writer(prefix, dtype);
  for (const auto& d : docs) writer.add_document(d);
  writer.finalize();
  return prefix;
}

std::vector<int32_t> all_tokens(const IndexedDataset& ds) {
  std::vector<int32_t> out(ds.num_tokens());
  ds.read_tokens(0, ds.num_tokens(), out.data());
  return out;
}

TEST(IndexedDataset, WriterIsByteExactMegatronFormat) {
  TempDir dir;
  const std::string prefix = write_store(dir, "store", DType::kUint16, three_docs());

  std::vector<uint8_t> idx = header(8, 3, 4);  // uint16, 3 sequences, doc_idx of 4
  ASSERT_EQ(idx.size(), 34u);
  for (int32_t n : {3, 1, 2}) put_i32(idx, n);        // sizes
  for (int64_t p : {0, 6, 8}) put_i64(idx, p);        // byte pointers
  for (int64_t d : {0, 1, 2, 3}) put_i64(idx, d);     // doc_idx
  const std::vector<uint8_t> bin = {1, 0, 2, 0, 3, 0, 0x00, 0x01, 7, 0, 0xff, 0xff};

  EXPECT_EQ(read_bytes(prefix + ".idx"), idx);
  EXPECT_EQ(read_bytes(prefix + ".bin"), bin);
  EXPECT_FALSE(std::filesystem::exists(prefix + ".idx.tmp"));
  EXPECT_FALSE(std::filesystem::exists(prefix + ".bin.tmp"));

  IndexedDataset ds(prefix);
  EXPECT_EQ(ds.prefix(), prefix);
  EXPECT_EQ(ds.dtype(), DType::kUint16);
  EXPECT_EQ(ds.num_sequences(), 3u);
  EXPECT_EQ(ds.num_documents(), 3u);
  EXPECT_EQ(ds.num_tokens(), 6u);
  EXPECT_EQ(all_tokens(ds), (std::vector<int32_t>{1, 2, 3, 256, 7, 65535}));
  int32_t mid[3];
  ds.read_tokens(2, 3, mid);  // across document boundaries
  EXPECT_EQ(std::vector<int32_t>(mid, mid + 3), (std::vector<int32_t>{3, 256, 7}));
  expect_error([&] { ds.read_tokens(4, 3, mid); }, {prefix, "past its end"});

  IndexedDataset moved = std::move(ds);  // move-only RAII
  EXPECT_EQ(moved.num_tokens(), 6u);
}

TEST(IndexedDataset, ReadsHandWrittenMultiSequenceDocuments) {
  // A Megatron store with 2 documents of 2 and 1 sequences: doc_idx 0, 2, 3.
  TempDir dir;
  const std::string prefix = dir / "mega";
  std::vector<uint8_t> idx = header(4, 3, 3);  // int32
  for (int32_t n : {2, 0, 3}) put_i32(idx, n);
  for (int64_t p : {0, 8, 8}) put_i64(idx, p);
  for (int64_t d : {0, 2, 3}) put_i64(idx, d);
  std::vector<uint8_t> bin;
  for (int32_t t : {10, 11, 12, 500, 14}) put_i32(bin, t);
  write_bytes(prefix + ".idx", idx);
  write_bytes(prefix + ".bin", bin);

  IndexedDataset ds(prefix);
  EXPECT_EQ(ds.num_sequences(), 3u);
  EXPECT_EQ(ds.num_documents(), 2u);
  EXPECT_EQ(all_tokens(ds), (std::vector<int32_t>{10, 11, 12, 500, 14}));
  // Token 3 (id 500) is in sequence 2, which belongs to document 1.
  expect_error([&] { ds.check_token_range(257); }, {prefix, "document 1", "500"});
  ds.check_token_range(501);
}

TEST(IndexedDataset, ReadsEveryIntegerDtype) {
  TempDir dir;
  const std::vector<std::vector<int32_t>> docs = {{0, 255, 17}, {}, {128}};
  for (DType dt : {DType::kUint8, DType::kInt16, DType::kUint16, DType::kInt32, DType::kInt64}) {
    const std::string prefix = write_store(dir, dtype_name(dt), dt, docs);
    IndexedDataset ds(prefix);
    EXPECT_EQ(ds.dtype(), dt);
    EXPECT_EQ(ds.num_documents(), 3u);
    EXPECT_EQ(std::filesystem::file_size(prefix + ".bin"), 4 * dtype_size(dt)) << dtype_name(dt);
    EXPECT_EQ(all_tokens(ds), (std::vector<int32_t>{0, 255, 17, 128})) << dtype_name(dt);
  }
  // Signed and wide values.
  const std::string p8 = write_store(dir, "i8", DType::kInt8, {{-128, 127, -1}});
  EXPECT_EQ(all_tokens(IndexedDataset(p8)), (std::vector<int32_t>{-128, 127, -1}));
  const std::string p32 = write_store(dir, "i32", DType::kInt32, {{100000, 2147483647}, {-5}});
  EXPECT_EQ(all_tokens(IndexedDataset(p32)), (std::vector<int32_t>{100000, 2147483647, -5}));
}

TEST(IndexedDataset, DtypeChoiceFollowsMegatron) {
  EXPECT_EQ(best_dtype_for_vocab(257), DType::kUint16);
  EXPECT_EQ(best_dtype_for_vocab(65499), DType::kUint16);
  EXPECT_EQ(best_dtype_for_vocab(65500), DType::kInt32);
  EXPECT_EQ(best_dtype_for_vocab(128256), DType::kInt32);
  EXPECT_EQ(dtype_size(DType::kUint16), 2u);
  EXPECT_EQ(dtype_size(DType::kInt64), 8u);
}

TEST(IndexedDataset, WriterRejectsTokensThatDoNotFit) {
  TempDir dir;
  const std::string prefix = dir / "u8";
  IndexedDatasetWriter writer(prefix, DType::kUint8);
  writer.add_document(std::vector<int32_t>{1, 2});
  expect_error([&] { writer.add_document(std::vector<int32_t>{3, 256}); },
               {prefix, "256", "document 1", "uint8"});
  expect_error([&] { IndexedDatasetWriter(dir / "f", DType::kFloat32); }, {"float32"});
  expect_error([&] { IndexedDatasetWriter(dir / "no/such/dir/x", DType::kUint16); },
               {dir / "no/such/dir/x.bin.tmp"});
}

TEST(IndexedDataset, UnfinishedWriterLeavesNothing) {
  TempDir dir;
  const std::string prefix = dir / "crash";
  {
    IndexedDatasetWriter writer(prefix, DType::kUint16);
    writer.add_document(std::vector<int32_t>{1, 2, 3});
    EXPECT_TRUE(std::filesystem::exists(prefix + ".bin.tmp"));
    EXPECT_FALSE(std::filesystem::exists(prefix + ".bin"));
  }
  EXPECT_TRUE(std::filesystem::is_empty(dir.path()));
  IndexedDatasetWriter writer(prefix, DType::kUint16);
  writer.finalize();  // an empty store is valid
  IndexedDataset ds(prefix);
  EXPECT_EQ(ds.num_documents(), 0u);
  EXPECT_EQ(ds.num_tokens(), 0u);
  expect_error([&] { writer.finalize(); }, {prefix});
}

// Bad inputs: each copy of a good store is broken one way, and the error
// must name the file at fault.
class BadStore : public ::testing::Test {
 protected:
  void SetUp() override {
    good_ = write_store(dir_, "good", DType::kUint16, three_docs());
    idx_ = read_bytes(good_ + ".idx");
    bin_ = read_bytes(good_ + ".bin");
  }
  std::string make(const std::string& name, const std::vector<uint8_t>& idx, const std::vector<uint8_t>& bin) {
    const std::string prefix = dir_ / name;
    write_bytes(prefix + ".idx", idx);
    write_bytes(prefix + ".bin", bin);
    return prefix;
  }
  TempDir dir_;
  std::string good_;
  std::vector<uint8_t> idx_, bin_;
};

TEST_F(BadStore, MissingFiles) {
  expect_error([&] { IndexedDataset(dir_ / "nothing"); }, {dir_ / "nothing.idx", "missing"});
  std::filesystem::remove(good_ + ".bin");
  expect_error([&] { IndexedDataset{good_}; }, {good_ + ".bin", "missing"});
}

TEST_F(BadStore, WrongMagic) {
  auto idx = idx_;
  idx[0] = 'X';
  const std::string p = make("magic", idx, bin_);
  expect_error([&] { IndexedDataset{p}; }, {p + ".idx", "magic"});
  const std::string tiny = make("tiny", {'M', 'M'}, bin_);
  expect_error([&] { IndexedDataset{tiny}; }, {tiny + ".idx", "magic"});
}

TEST_F(BadStore, BadVersionAndDtype) {
  auto idx = idx_;
  idx[9] = 2;
  const std::string v = make("version", idx, bin_);
  expect_error([&] { IndexedDataset{v}; }, {v + ".idx", "version 2"});
  idx = idx_;
  idx[17] = 7;  // float32
  const std::string f = make("float", idx, bin_);
  expect_error([&] { IndexedDataset{f}; }, {f + ".idx", "dtype code 7"});
  idx[17] = 42;
  const std::string u = make("unknown", idx, bin_);
  expect_error([&] { IndexedDataset{u}; }, {u + ".idx", "dtype code 42"});
}

TEST_F(BadStore, TruncatedIdx) {
  auto idx = idx_;
  idx.resize(idx.size() - 5);  // doc_idx runs past the end
  const std::string p = make("short_idx", idx, bin_);
  expect_error([&] { IndexedDataset{p}; }, {p + ".idx", "truncated"});
  idx.resize(20);  // inside the header
  const std::string h = make("short_header", idx, bin_);
  expect_error([&] { IndexedDataset{h}; }, {h + ".idx", "truncated"});
  idx = idx_;
  idx[25] = 0x7f;  // an absurd sequence count must not overflow
  const std::string a = make("absurd", idx, bin_);
  expect_error([&] { IndexedDataset{a}; }, {a + ".idx", "truncated"});
}

TEST_F(BadStore, TruncatedBin) {
  auto bin = bin_;
  bin.resize(bin.size() - 2);
  const std::string p = make("short_bin", idx_, bin);
  expect_error([&] { IndexedDataset{p}; }, {p + ".bin", "10 bytes", "12 bytes"});
}

TEST_F(BadStore, InconsistentPointersAndDocIdx) {
  auto idx = idx_;
  idx[34 + 12 + 8] = 4;  // pointer of sequence 1: 6 -> 4
  const std::string p = make("pointers", idx, bin_);
  expect_error([&] { IndexedDataset{p}; }, {p + ".idx", "sequence 1", "pointers not consistent"});
  idx = idx_;
  idx[34 + 12 + 24 + 24] = 2;  // last doc_idx entry 3 -> 2
  const std::string d = make("doc_idx", idx, bin_);
  expect_error([&] { IndexedDataset{d}; }, {d + ".idx", "document index"});
  idx = idx_;
  idx[34] = 0xff, idx[35] = 0xff, idx[36] = 0xff, idx[37] = 0xff;  // size -1
  const std::string n = make("negative", idx, bin_);
  expect_error([&] { IndexedDataset{n}; }, {n + ".idx", "negative size"});
}

TEST(IndexedDataset, CheckTokenRange) {
  TempDir dir;
  const std::string prefix = write_store(dir, "range", DType::kUint16, {{1, 2}, {3}, {4, 300, 5}});
  IndexedDataset ds(prefix);
  ds.check_token_range(301);
  expect_error([&] { ds.check_token_range(257); }, {prefix, "document 2", "300"});

  const std::string neg = write_store(dir, "neg", DType::kInt16, {{1}, {-3}});
  expect_error([&] { IndexedDataset(neg).check_token_range(257); }, {neg, "document 1", "-3"});

  // uint8 cannot exceed 255: nothing to scan for a 256-id vocabulary.
  const std::string u8 = write_store(dir, "u8", DType::kUint8, {{255, 0}});
  IndexedDataset(u8).check_token_range(256);
  expect_error([&] { IndexedDataset(u8).check_token_range(255); }, {u8, "document 0", "255"});
}

TEST(IndexedDataset, CheckTokenRangeOnALargeStoreIsFast) {
  TempDir dir;
  std::vector<int32_t> doc(1 << 20);
  for (size_t i = 0; i < doc.size(); ++i) doc[i] = int32_t(i % 257);
  IndexedDatasetWriter writer(dir / "big", DType::kUint16);
  for (int d = 0; d < 4; ++d) writer.add_document(doc);
  doc[12345] = 257;
  writer.add_document(doc);
  writer.finalize();
  IndexedDataset ds(dir / "big");
  EXPECT_EQ(ds.num_tokens(), 5u << 20);
  expect_error([&] { ds.check_token_range(257); }, {"document 4", "257", "token 4206649"});
  ds.check_token_range(258);
}

}  // namespace
}  // namespace mt::data
