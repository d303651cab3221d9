#include "data/prepare_data.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>

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

// Files and directories (and extensions) into the store at `prefix`, bytes
// with an end of document, one worker.
PrepareDataConfig config(std::vector<std::string> inputs, std::string prefix, std::vector<std::string> extensions = {}) {
  PrepareDataConfig c;
  c.inputs.inputs = std::move(inputs);
  c.inputs.extensions = std::move(extensions);
  c.output_prefix = std::move(prefix);
  return c;
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
  PrepareDataStats stats = prepare_data(config({root_}, out_ / "all"));
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
  prepare_data(config({root_}, out_ / "again", {}));
  EXPECT_EQ(test_util::read_bytes(out_ / "again.bin"), test_util::read_bytes(out_ / "all.bin"));
  EXPECT_EQ(test_util::read_bytes(out_ / "again.idx"), test_util::read_bytes(out_ / "all.idx"));
}

TEST_F(PrepareData, ExtensionFilterAndNamedFiles) {
  PrepareDataStats stats = prepare_data(config({root_}, out_ / "txt", {"txt"}));
  EXPECT_EQ(stats.documents, 4u);
  EXPECT_EQ(all_tokens(IndexedDataset(out_ / "txt")), expected({"ay", "bee", "sea\n", "e\xff"}));

  stats = prepare_data(config({root_ + "/sub", root_ + "/a.txt"}, out_ / "md", {".md"}));
  // Inputs in the order given; a named file is taken whatever its extension.
  EXPECT_EQ(all_tokens(IndexedDataset(out_ / "md")), expected({"# dee", "ay"}));
}

TEST_F(PrepareData, OutputInsideInputIsNotReadBack) {
  prepare_data(config({root_}, root_ + "/store", {}));
  PrepareDataStats stats = prepare_data(config({root_}, root_ + "/store", {}));
  EXPECT_EQ(stats.documents, 5u);
}

TEST_F(PrepareData, UnreadableFilesAreSkipped) {
  if (::geteuid() == 0) GTEST_SKIP() << "root reads every file";
  fs::permissions(root_ + "/b.txt", fs::perms::none);
  fs::create_directory(root_ + "/locked");
  write_text(root_ + "/locked/f.txt", "hidden");
  fs::permissions(root_ + "/locked", fs::perms::none);
  PrepareDataStats stats = prepare_data(config({root_}, out_ / "s", {}));
  EXPECT_EQ(stats.documents, 4u);
  EXPECT_EQ(stats.skipped, 2u);  // b.txt and the fifo; the locked directory is not entered
  EXPECT_EQ(all_tokens(IndexedDataset(out_ / "s")), expected({"ay", "sea\n", "# dee", "e\xff"}));
  expect_error([&] { prepare_data(config({root_ + "/b.txt"}, out_ / "n", {})); }, {root_ + "/b.txt"});
  fs::permissions(root_ + "/locked", fs::perms::owner_all);  // so that TempDir can remove it
}

TEST_F(PrepareData, Errors) {
  expect_error([&] { prepare_data(config({in_ / "missing"}, out_ / "x", {})); }, {in_ / "missing", "does not exist"});
  expect_error([&] { prepare_data(config({root_}, out_ / "no_dir/x", {})); }, {out_ / "no_dir", "does not exist"});
  fs::create_directory(in_ / "hollow");
  write_text(in_ / "hollow/empty.txt", "");
  expect_error([&] { prepare_data(config({in_ / "hollow"}, out_ / "x", {})); }, {"no documents", in_ / "hollow"});
  expect_error([&] { prepare_data(config({root_}, out_ / "x", {"rst"})); }, {"no documents", "rst"});
  EXPECT_TRUE(fs::is_empty(out_.path()));  // failures leave nothing behind
}


// JSON lines as Megatron's preprocess_data.py takes them: a document a line
// and key, a store a key named PREFIX_KEY_document.
TEST_F(PrepareData, JsonLinesMakeAStoreAKey) {
  write_text(in_ / "docs.jsonl",
             "{\"text\": \"first\", \"title\": \"One\", \"id\": 1}\n"
             "\n"  // blank lines are skipped
             "{\"title\": \"Two\", \"text\": \"caf\\u00e9 \\ud83d\\ude00\"}\n"
             "{\"text\": \"\", \"title\": \"Three\"}\r\n");  // an empty document is left out
  PrepareDataConfig c = config({in_ / "docs.jsonl"}, out_ / "corpus");
  c.inputs.json_keys = {"text", "title"};
  PrepareDataStats stats = prepare_data(c);
  EXPECT_EQ(stats.stores, (std::vector<std::string>{out_ / "corpus_text_document", out_ / "corpus_title_document"}));
  EXPECT_EQ(stats.documents, 5u);
  EXPECT_EQ(stats.empty, 1u);
  EXPECT_EQ(all_tokens(IndexedDataset(out_ / "corpus_text_document")), expected({"first", "caf\u00e9 \U0001F600"}));
  EXPECT_EQ(all_tokens(IndexedDataset(out_ / "corpus_title_document")), expected({"One", "Two", "Three"}));

  // Megatron's default key is "text"; without --append-eod no end of document.
  c.inputs.json_keys.clear();
  c.append_eod = false;
  c.output_prefix = out_ / "plain";
  prepare_data(c);
  EXPECT_EQ(all_tokens(IndexedDataset(out_ / "plain_text_document")), ByteTokenizer().encode("firstcaf\u00e9 \U0001F600"));
  EXPECT_FALSE(fs::exists(out_ / "plain.bin"));
}

// Bad JSON lines name the file and line, and nothing is written.
TEST_F(PrepareData, BadJsonLinesNameTheFileAndLine) {
  const std::string file = in_ / "bad.jsonl";
  const auto fails_at = [&](const std::string& second_line, const std::vector<std::string>& parts) {
    write_text(file, "{\"text\": \"fine\"}\n" + second_line + "\n{\"text\": \"after\"}\n");
    std::vector<std::string> all = parts;
    all.push_back(file + ":2");
    expect_error([&] { prepare_data(config({file}, out_ / "x")); }, all);
  };
  fails_at("{\"text\": \"unterminated}", {"not a JSON line"});
  fails_at("[\"text\"]", {"not an object"});
  fails_at("{\"body\": \"x\"}", {"no key \"text\""});
  fails_at("{\"text\": 3}", {"key \"text\" is number, not a string"});
  fails_at("{\"text\": \"caf\xe9\"}", {"not a JSON line", "UTF-8"});
  EXPECT_TRUE(fs::is_empty(out_.path()));

  write_text(in_ / "a.txt", "text");
  expect_error([&] { prepare_data(config({file, in_ / "a.txt"}, out_ / "x")); }, {"mixes JSON lines", "a.txt"});
  PrepareDataConfig keys = config({in_ / "a.txt"}, out_ / "x");
  keys.inputs.json_keys = {"body"};
  expect_error([&] { prepare_data(keys); }, {"--json-keys body", "JSON lines"});
  EXPECT_TRUE(fs::is_empty(out_.path()));
}

// --workers N writes the same bytes as one worker.
TEST_F(PrepareData, WorkersWriteTheSameBytes) {
  std::string lines;
  for (int i = 0; i < 9000; ++i)  // more than one batch
    lines += fmt::format("{{\"text\": \"document {} {}\"}}\n", i, std::string(size_t(i % 97), 'a' + char(i % 26)));
  write_text(in_ / "many.jsonl", lines);
  for (int workers : {1, 2, 3}) {
    PrepareDataConfig c = config({in_ / "many.jsonl"}, out_ / fmt::format("w{}", workers));
    c.workers = workers;
    EXPECT_EQ(prepare_data(c).documents, 9000u);
  }
  for (const char* ext : {"_text_document.bin", "_text_document.idx"}) {
    EXPECT_EQ(test_util::read_bytes(out_ / (std::string("w2") + ext)), test_util::read_bytes(out_ / (std::string("w1") + ext)));
    EXPECT_EQ(test_util::read_bytes(out_ / (std::string("w3") + ext)), test_util::read_bytes(out_ / (std::string("w1") + ext)));
  }
}

// Ids are stored as uint16 below a vocabulary of 65,500 and int32 from it
// (Megatron's rule), with the tokenizer's own end of document.
TEST_F(PrepareData, StoreTypeFollowsTheVocabulary) {
  write_text(in_ / "ids.txt", "7 65499 0");
  for (int vocab : {65500, 65499}) {
    PrepareDataConfig c = config({in_ / "ids.txt"}, out_ / fmt::format("v{}", vocab));
    c.tokenizer.type = "NullTokenizer";
    c.tokenizer.vocab_size = vocab;
    if (vocab == 65499) {
      expect_error([&] { prepare_data(c); }, {in_ / "ids.txt", "65499", "--vocab-size 65499"});
      continue;
    }
    prepare_data(c);
    IndexedDataset ds(out_ / "v65500");
    EXPECT_EQ(ds.dtype(), DType::kInt32);
    EXPECT_EQ(all_tokens(ds), (std::vector<int32_t>{7, 65499, 0, 65499}));  // NullTokenizer's eod: vocab - 1
  }
  PrepareDataConfig small = config({in_ / "ids.txt"}, out_ / "small");
  small.tokenizer.type = "NullTokenizer";
  small.tokenizer.vocab_size = 70000;
  small.workers = 0;
  expect_error([&] { prepare_data(small); }, {"--workers 0"});
}

}  // namespace
}  // namespace mt::data
