// train_tokenizer: SentencePiece models trained on the documents a callback
// gives, loadable as Megatron's three SentencePiece types; long lines cut,
// never dropped; the same corpus gives the same model; bad options and
// corpora are errors naming the flag, and leave no files.
#include "tokenizer/train_tokenizer.h"

#include <gtest/gtest.h>
#include <sentencepiece_processor.h>

#include <filesystem>

#include "tokenizer/tokenizer.h"
#include "tokenizer_oracle.h"

namespace mt {
namespace {

// The callback over a list of documents.
NextDocument documents_of(const std::vector<std::string>& docs) {
  return [&docs, next = size_t(0)]() mutable -> std::optional<std::string_view> {
    if (next == docs.size()) return std::nullopt;
    return docs[next++];
  };
}

std::string file_bytes(const std::string& path) {
  const std::vector<uint8_t> b = test_util::read_bytes(path);
  return std::string(b.begin(), b.end());
}

class TrainTokenizerTest : public ::testing::Test {
 protected:
  // The corpus, and a BPE model of 1000 pieces trained on it once for the
  // tests of the binary.
  static void SetUpTestSuite() {
    dir_ = new test_util::TempDir;
    corpus_ = new std::vector<std::string>;
    for (const test_util::CorpusDocument& d : test_util::tokenizer_corpus()) corpus_->push_back(d.bytes);
    bpe_ = new TrainTokenizerResult(train_tokenizer(options("bpe", 1000, "bpe"), documents_of(*corpus_)));
  }
  static void TearDownTestSuite() {
    delete bpe_;
    delete corpus_;
    delete dir_;
  }

  static TrainTokenizerOptions options(const std::string& type, int vocab_size, const std::string& name) {
    TrainTokenizerOptions o;
    o.model_type = type;
    o.vocab_size = vocab_size;
    o.output_prefix = *dir_ / name;
    return o;
  }

  static inline test_util::TempDir* dir_ = nullptr;
  static inline std::vector<std::string>* corpus_ = nullptr;
  static inline TrainTokenizerResult* bpe_ = nullptr;
};

// Both model types: <prefix>.model and <prefix>.vocab (a line a piece, as
// spm_train writes it), the counts of what was read, and the model loads as
// each SentencePiece type with that type's vocabulary and eod.
TEST_F(TrainTokenizerTest, ModelLoadsAsEverySentencePieceType) {
  int64_t lines = 0;
  for (const std::string& d : *corpus_)
    for (size_t at = 0; at <= d.size();) {
      const size_t end = std::min(d.find('\n', at), d.size());
      lines += end > at;
      at = end + 1;
    }
  const TrainTokenizerResult unigram = train_tokenizer(options("unigram", 1000, "unigram"), documents_of(*corpus_));
  for (const TrainTokenizerResult& r : {*bpe_, unigram}) {
    EXPECT_EQ(r.documents, int64_t(corpus_->size()));
    EXPECT_EQ(r.lines, lines);
    EXPECT_EQ(r.long_line_cuts, 0);
    EXPECT_EQ(r.skipped_lines, 0);
    EXPECT_FALSE(std::filesystem::exists(r.model_path + ".partial"));
    const std::string vocab = file_bytes(r.vocab_path);
    EXPECT_EQ(std::count(vocab.begin(), vocab.end(), '\n'), 1000);
    EXPECT_EQ(vocab.substr(0, 21), "<unk>\t0\n<s>\t0\n</s>\t0\n");
    EXPECT_NE(vocab.find("<0x0A>\t0\n"), std::string::npos);  // byte fallback

    for (const auto& [type, size, eod] : {std::tuple{"SentencePieceTokenizer", 1005, 1002},
                                          std::tuple{"GPTSentencePieceTokenizer", 1000, 2},
                                          std::tuple{"Llama2Tokenizer", 1000, 2}}) {
      TokenizerOptions o;
      o.type = type;
      o.tokenizer_model = r.model_path;
      const std::unique_ptr<Tokenizer> tok = make_tokenizer(read_tokenizer_spec(o));
      EXPECT_EQ(tok->vocab_size(), size) << type;
      EXPECT_EQ(tok->eod(), eod) << type;
      const std::string text = "int main() {\n    return 42;  // done\n}\n";
      EXPECT_EQ(tok->decode(tok->encode(text)), text) << type;
    }
  }
}

// Digits are pieces of one digit (split_digits); runs of spaces can be
// pieces of their own (allow_whitespace_only_pieces); the model normalizes
// nothing.
TEST_F(TrainTokenizerTest, DigitsSplitSpacesKept) {
  sentencepiece::SentencePieceProcessor sp;
  ASSERT_TRUE(sp.LoadFromSerializedProto(file_bytes(bpe_->model_path)).ok());
  std::vector<std::string> pieces;
  ASSERT_TRUE(sp.Encode("year 2024", &pieces).ok());
  EXPECT_EQ(std::vector<std::string>(pieces.end() - 4, pieces.end()),
            (std::vector<std::string>{"2", "0", "2", "4"}));
  bool spaces_only = false;
  for (int id = 0; id < sp.GetPieceSize(); ++id)
    spaces_only |= sp.IdToPiece(id).find_first_not_of("\xe2\x96\x81") == std::string::npos &&
                   sp.IdToPiece(id).size() >= 6;
  EXPECT_TRUE(spaces_only) << "no piece of two or more spaces";
  std::vector<int> ids;
  ASSERT_TRUE(sp.Encode("\xef\xac\x81  x ", &ids).ok());  // U+FB01, two spaces, a trailing one
  std::string back;
  ASSERT_TRUE(sp.Decode(ids, &back).ok());
  EXPECT_EQ(back, "\xef\xac\x81  x ");
}

// A line longer than kMaxSentenceBytes is trained on in parts: a character
// that only such a line holds (U+0416, 2 bytes, in 20,000 bytes without a
// space, after 15,000 bytes of words) becomes a piece, not byte fallback.
TEST_F(TrainTokenizerTest, LongLinesAreCutNotDropped) {
  std::string line;
  while (line.size() < 15000) line += "lorem ipsum ";
  for (int i = 0; i < 10000; ++i) line += "\xd0\x96";
  std::vector<std::string> docs = *corpus_;
  docs.push_back(line + "\nshort line\n");
  const TrainTokenizerResult r = train_tokenizer(options("bpe", 1000, "long"), documents_of(docs));
  // 15,000 bytes of words in parts of at most 4192 ending after a space (4
  // cuts, the last where the words end), then 20,000 bytes of U+0416 in
  // parts of 4192 (an even count: whole characters; 4 cuts).
  EXPECT_EQ(r.long_line_cuts, 8);
  EXPECT_EQ(r.lines, bpe_->lines + r.long_line_cuts + 2);
  sentencepiece::SentencePieceProcessor sp;
  ASSERT_TRUE(sp.LoadFromSerializedProto(file_bytes(r.model_path)).ok());
  EXPECT_NE(sp.PieceToId("\xd0\x96"), sp.unk_id());
  EXPECT_NE(sp.PieceToId("\xd0\x96\xd0\x96"), sp.unk_id());
}

// The same corpus gives the same model (SentencePiece's sampling has a fixed
// seed); sampling 200 of its lines gives another.
TEST_F(TrainTokenizerTest, SameCorpusSameModelAndSampling) {
  const TrainTokenizerResult again = train_tokenizer(options("bpe", 1000, "again"), documents_of(*corpus_));
  EXPECT_EQ(file_bytes(again.model_path), file_bytes(bpe_->model_path));
  EXPECT_EQ(file_bytes(again.vocab_path), file_bytes(bpe_->vocab_path));
  TrainTokenizerOptions sampled = options("bpe", 1000, "sampled");
  sampled.input_sentence_size = 200;
  const TrainTokenizerResult a = train_tokenizer(sampled, documents_of(*corpus_));
  sampled.output_prefix = *dir_ / "sampled2";
  const TrainTokenizerResult b = train_tokenizer(sampled, documents_of(*corpus_));
  EXPECT_EQ(a.lines, bpe_->lines);  // all read, 200 kept
  EXPECT_EQ(file_bytes(a.model_path), file_bytes(b.model_path));
  EXPECT_NE(file_bytes(a.model_path), file_bytes(bpe_->model_path));
}

// Lines holding U+2585 (SentencePiece's reserved character) are skipped and
// counted.
TEST_F(TrainTokenizerTest, ReservedCharacterLinesCounted) {
  std::vector<std::string> docs = *corpus_;
  docs.push_back("a \xe2\x96\x85 b\nkept\n");
  const TrainTokenizerResult r = train_tokenizer(options("bpe", 1000, "reserved"), documents_of(docs));
  EXPECT_EQ(r.skipped_lines, 1);
  EXPECT_EQ(r.lines, bpe_->lines + 1);
}

// Each error names its flag, and no file is written.
TEST_F(TrainTokenizerTest, ErrorsNameTheFlagAndWriteNothing) {
  auto expect_no_files = [](const std::string& prefix) {
    for (const char* ext : {".model", ".vocab", ".model.partial", ".vocab.partial"})
      EXPECT_FALSE(std::filesystem::exists(prefix + ext)) << prefix + ext;
  };
  const NextDocument corpus = documents_of(*corpus_);

  test_util::expect_error([&] { train_tokenizer(options("bpe", 259, "e1"), corpus); },
                          {"--vocab-size 259", "too small", "259 pieces"});
  expect_no_files(*dir_ / "e1");
  test_util::expect_error([&] { train_tokenizer(options("bpe", 300, "e2"), documents_of(*corpus_)); },
                          {"--vocab-size 300", "SentencePiece", "smaller than required_chars"});
  expect_no_files(*dir_ / "e2");
  test_util::expect_error([&] { train_tokenizer(options("unigram", 5000, "e3"), documents_of(*corpus_)); },
                          {"--vocab-size 5000", "SentencePiece", "too high"});
  expect_no_files(*dir_ / "e3");
  test_util::expect_error([&] { train_tokenizer(options("word", 1000, "e4"), documents_of(*corpus_)); },
                          {"--model-type word", "bpe or unigram"});

  TrainTokenizerOptions few = options("bpe", 1000, "e7");
  few.input_sentence_size = 50;
  test_util::expect_error([&] { train_tokenizer(few, documents_of(*corpus_)); }, {"--input-sentence-size 50"});
  expect_no_files(*dir_ / "e7");

  const std::vector<std::string> empty = {"", "\n\n", ""};
  test_util::expect_error([&] { train_tokenizer(options("bpe", 1000, "e5"), documents_of(empty)); },
                          {"empty", "3 documents"});
  expect_no_files(*dir_ / "e5");

  TrainTokenizerOptions missing = options("bpe", 1000, "no_such_folder/tok");
  test_util::expect_error([&] { train_tokenizer(missing, documents_of(*corpus_)); },
                          {"--output-prefix " + missing.output_prefix, "does not exist"});
  missing.output_prefix = *dir_ / "";
  test_util::expect_error([&] { train_tokenizer(missing, documents_of(*corpus_)); },
                          {"--output-prefix", "names a folder"});
  missing.output_prefix = "";
  test_util::expect_error([&] { train_tokenizer(missing, documents_of(*corpus_)); }, {"--output-prefix"});

  // The reader's own error comes through as it is.
  size_t calls = 0;
  test_util::expect_error([&] {
    train_tokenizer(options("bpe", 1000, "e6"), [&]() -> std::optional<std::string_view> {
      if (++calls < 3) return (*corpus_)[calls];
      MT_FAIL("input.jsonl: line 7: not JSON");
    });
  }, {"input.jsonl: line 7: not JSON"});
  EXPECT_EQ(calls, 3u);
  expect_no_files(*dir_ / "e6");
}

}  // namespace
}  // namespace mt
