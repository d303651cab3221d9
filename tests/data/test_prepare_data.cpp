#include "data/prepare_data.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

#include "tokenizer/byte_tokenizer.h"
#include "data/indexed_dataset.h"
#include "test_util.h"

namespace mt::data {
namespace {

namespace fs = std::filesystem;
using test_util::expect_error;
using test_util::TempDir;
using test_util::write_text;

std::vector<int32_t> all_tokens(const IndexedDataset& ds) {
  std::vector<int32_t> out(ds.num_tokens());
  ds.read_tokens(0, ds.num_tokens(), out.data());
  return out;
}

// Concatenates documents, each followed by EOD, as prepare-data stores them.
std::vector<int32_t> expected(const std::vector<std::string>& docs) {
  std::vector<int32_t> out;
  for (const std::string& d : docs) {
    for (int32_t t : ByteTokenizer().encode(d)) out.push_back(t);
    out.push_back(ByteTokenizer::kEod);
  }
  return out;
}

class PrepareData : public ::testing::Test {
 protected:
  // root/b.txt, root/a.txt, root/empty.txt, root/sub/c.txt, root/sub/d.md,
  // root/sub/deeper/e.txt, root/link -> sub (symlinked directory), root/pipe.txt (fifo)
  void SetUp() override {
    root_ = in_ / "root";
    fs::create_directories(root_ + "/sub/deeper");
    write_text(root_ + "/b.txt", "bee");
    write_text(root_ + "/a.txt", "ay");
    write_text(root_ + "/empty.txt", "");
    write_text(root_ + "/sub/c.txt", "sea\n");
    write_text(root_ + "/sub/d.md", "# dee");
    write_text(root_ + "/sub/deeper/e.txt", "e\xff");
    fs::create_directory_symlink(root_ + "/sub", root_ + "/link");
    ASSERT_EQ(::mkfifo((root_ + "/pipe.txt").c_str(), 0644), 0);
  }
  TempDir in_, out_;
  std::string root_;
};

TEST_F(PrepareData, SortedWalkWithEodAfterEachDocument) {
  PrepareDataConfig config{{root_}, out_ / "all", {}, {}};
  PrepareDataStats stats = prepare_data(config);
  const std::vector<std::string> docs = {"ay", "bee", "sea\n", "# dee", "e\xff"};
  EXPECT_EQ(stats.documents, 5u);
  EXPECT_EQ(stats.bytes, 2u + 3 + 4 + 5 + 2);
  EXPECT_EQ(stats.tokens, stats.bytes + 5);
  EXPECT_EQ(stats.skipped, 1u);  // the fifo

  IndexedDataset ds(out_ / "all");
  EXPECT_EQ(ds.dtype(), DType::kUint16);
  EXPECT_EQ(ds.num_documents(), 5u);
  EXPECT_EQ(all_tokens(ds), expected(docs));
  ds.check_token_range(ByteTokenizer::kVocabSize);

  // Deterministic: the same input gives the same bytes.
  prepare_data({{root_}, out_ / "again", {}, {}});
  EXPECT_EQ(test_util::read_bytes(out_ / "again.bin"), test_util::read_bytes(out_ / "all.bin"));
  EXPECT_EQ(test_util::read_bytes(out_ / "again.idx"), test_util::read_bytes(out_ / "all.idx"));
}

TEST_F(PrepareData, ExtensionFilterAndNamedFiles) {
  PrepareDataStats stats = prepare_data({{root_}, out_ / "txt", {"txt"}, {}});
  EXPECT_EQ(stats.documents, 4u);
  EXPECT_EQ(all_tokens(IndexedDataset(out_ / "txt")), expected({"ay", "bee", "sea\n", "e\xff"}));

  stats = prepare_data({{root_ + "/sub", root_ + "/a.txt"}, out_ / "md", {".md"}, {}});
  // Inputs in the order given; a named file is taken whatever its extension.
  EXPECT_EQ(all_tokens(IndexedDataset(out_ / "md")), expected({"# dee", "ay"}));
}

TEST_F(PrepareData, OutputInsideInputIsNotReadBack) {
  prepare_data({{root_}, root_ + "/store", {}, {}});
  PrepareDataStats stats = prepare_data({{root_}, root_ + "/store", {}, {}});
  EXPECT_EQ(stats.documents, 5u);
}

TEST_F(PrepareData, UnreadableFilesAreSkipped) {
  if (::geteuid() == 0) GTEST_SKIP() << "root reads every file";
  fs::permissions(root_ + "/b.txt", fs::perms::none);
  fs::create_directory(root_ + "/locked");
  write_text(root_ + "/locked/f.txt", "hidden");
  fs::permissions(root_ + "/locked", fs::perms::none);
  PrepareDataStats stats = prepare_data({{root_}, out_ / "s", {}, {}});
  EXPECT_EQ(stats.documents, 4u);
  EXPECT_EQ(stats.skipped, 2u);  // b.txt and the fifo; the locked directory is not entered
  EXPECT_EQ(all_tokens(IndexedDataset(out_ / "s")), expected({"ay", "sea\n", "# dee", "e\xff"}));
  expect_error([&] { prepare_data({{root_ + "/b.txt"}, out_ / "n", {}, {}}); }, {root_ + "/b.txt"});
  fs::permissions(root_ + "/locked", fs::perms::owner_all);  // so that TempDir can remove it
}

TEST_F(PrepareData, Errors) {
  expect_error([&] { prepare_data({{in_ / "missing"}, out_ / "x", {}, {}}); }, {in_ / "missing", "does not exist"});
  expect_error([&] { prepare_data({{root_}, out_ / "no_dir/x", {}, {}}); }, {out_ / "no_dir", "does not exist"});
  fs::create_directory(in_ / "hollow");
  write_text(in_ / "hollow/empty.txt", "");
  expect_error([&] { prepare_data({{in_ / "hollow"}, out_ / "x", {}, {}}); }, {"no documents", in_ / "hollow"});
  expect_error([&] { prepare_data({{root_}, out_ / "x", {"rst"}, {}}); }, {"no documents", "rst"});
  EXPECT_TRUE(fs::is_empty(out_.path()));  // failures leave nothing behind
}

}  // namespace
}  // namespace mt::data
