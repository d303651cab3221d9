// Megatron's three SentencePiece types against Debian's python3-sentencepiece
// (scripts/tokenizer_oracles/encode_sentencepiece.py, which applies
// Megatron's handling of each type itself) on every corpus document, on
// models train_tokenizer trained (BPE and unigram, identity normalization,
// byte fallback) and on models python3-sentencepiece trained with
// SentencePiece's defaults (nmt_nfkc, no byte fallback).
#include <gtest/gtest.h>

#include "tokenizer/tokenizer.h"
#include "tokenizer/train_tokenizer.h"
#include "tokenizer_oracle.h"

namespace mt {
namespace {

using test_util::CorpusDocument;

const char* const kTypes[] = {"GPTSentencePieceTokenizer", "Llama2Tokenizer", "SentencePieceTokenizer"};

std::string python_oracle(const std::string& script) {
  return "/usr/bin/python3 " + test_util::tokenizer_oracles_dir() + "/" + script;
}

std::unique_ptr<Tokenizer> load(const std::string& type, const std::string& model) {
  TokenizerOptions options;
  options.type = type;
  options.tokenizer_model = model;
  return make_tokenizer(read_tokenizer_spec(options));
}


class SentencePieceTokenizerTest : public ::testing::Test {
 protected:
  // The models, trained once for all the tests of the binary: train_tokenizer's
  // "bpe" and "unigram" (vocabulary 1000), python3-sentencepiece's "python"
  // (unigram, SentencePiece's defaults, vocabulary 800) and "python_no_bos"
  // (BPE, no BOS or EOS, pad id 1).
  static void SetUpTestSuite() {
    dir_ = new test_util::TempDir;
    corpus_ = new std::vector<CorpusDocument>(test_util::tokenizer_corpus());
    for (const char* type : {"bpe", "unigram"}) {
      TrainTokenizerOptions options;
      options.model_type = type;
      options.vocab_size = 1000;
      options.output_prefix = *dir_ / type;
      size_t next = 0;
      train_tokenizer(options, [&]() -> std::optional<std::string_view> {
        if (next == corpus_->size()) return std::nullopt;
        return (*corpus_)[next++].bytes;
      });
    }
    std::string files;
    for (const CorpusDocument& d : *corpus_) files += " '" + d.path + "'";
    const std::string train = python_oracle("train_sentencepiece.py") + " --vocab-size 800 --model-prefix ";
    EXPECT_EQ(std::system((train + (*dir_ / "python") + files).c_str()), 0);
    EXPECT_EQ(std::system((train + (*dir_ / "python_no_bos") + " --model-type bpe --bos-id -1 --eos-id -1 "
                           "--pad-id 1" + files).c_str()), 0);
    // A document of Megatron's special tokens, for SentencePieceTokenizer's
    // cuts: at the start and end, side by side, in words, each model's own
    // <s> and </s> and <pad>, and those added when a model lacks them.
    test_util::write_text(*dir_ / "special_tokens.txt",
                          "<CLS>start <SEP> mid<SEP><SEP>x</s> y <s>z<EOD>\n<MASK><pad><BOS><EOS><PAD> <EOD");
  }
  static void TearDownTestSuite() {
    delete corpus_;
    delete dir_;
  }

  static std::string model(const std::string& name) { return *dir_ / (name + ".model"); }

  // The corpus and the special-token document: path and bytes.
  static std::vector<CorpusDocument> documents() {
    std::vector<CorpusDocument> docs = *corpus_;
    const std::string path = *dir_ / "special_tokens.txt";
    const std::vector<uint8_t> bytes = test_util::read_bytes(path);
    docs.push_back({"special_tokens.txt", path, std::string(bytes.begin(), bytes.end())});
    return docs;
  }

  // Each type's ids on every document equal python3-sentencepiece's with
  // Megatron's handling of that type; one oracle run a type.
  static void expect_oracle_ids(const std::string& name) {
    const std::vector<CorpusDocument> docs = documents();
    for (const char* type : kTypes) {
      if (name == "python_no_bos" && std::string(type) != "SentencePieceTokenizer") continue;  // no EOS: refused
      const std::unique_ptr<Tokenizer> tok = load(type, model(name));
      const nlohmann::json theirs = test_util::run_oracle(
          python_oracle("encode_sentencepiece.py") + " --model '" + model(name) + "' --tokenizer-type " + type, docs);
      test_util::expect_oracle_ids(*tok, theirs, docs, name + " " + type);
    }
  }

  static inline test_util::TempDir* dir_ = nullptr;
  static inline std::vector<CorpusDocument>* corpus_ = nullptr;
};

TEST_F(SentencePieceTokenizerTest, IdsEqualPythonOnTrainedBpeModel) { expect_oracle_ids("bpe"); }
TEST_F(SentencePieceTokenizerTest, IdsEqualPythonOnTrainedUnigramModel) { expect_oracle_ids("unigram"); }
// Models nobody here wrote: python3-sentencepiece's trainer, its defaults.
TEST_F(SentencePieceTokenizerTest, IdsEqualPythonOnPythonTrainedModel) { expect_oracle_ids("python"); }
TEST_F(SentencePieceTokenizerTest, IdsEqualPythonOnPythonModelWithoutBosEos) { expect_oracle_ids("python_no_bos"); }

// Identity normalization with byte fallback: every valid document comes back
// exactly, with each type; the invalid one comes back with U+FFFD for each
// byte that starts no character, as python3-sentencepiece decodes it.
TEST_F(SentencePieceTokenizerTest, DecodeRoundTripsOnTrainedModels) {
  for (const char* name : {"bpe", "unigram"}) {
    const nlohmann::json python_text = test_util::run_oracle(
        python_oracle("encode_sentencepiece.py") + " --decode --model '" + model(name) + "'", *corpus_);
    for (const char* type : kTypes) {
      const std::unique_ptr<Tokenizer> tok = load(type, model(name));
      for (const CorpusDocument& d : *corpus_) {
        const std::string back = tok->decode(tok->encode(d.bytes));
        EXPECT_EQ(back, python_text.at(d.path).get<std::string>()) << name << " " << type << " " << d.name;
        if (d.name != "invalid_utf8.bin") {
          EXPECT_EQ(back, d.bytes) << name << " " << type << " " << d.name;
        } else {
          EXPECT_NE(back, d.bytes);
          EXPECT_EQ(back.substr(0, 16), "Valid start. \xef\xbf\xbd");  // the lone continuation byte 0x80
        }
      }
    }
  }
}

// nmt_nfkc (SentencePiece's default, python3-sentencepiece's model): text
// comes back NFKC-normalized with runs of spaces made one and no leading or
// trailing space, as python3-sentencepiece decodes it, on every document;
// normalized text comes back as it is.
TEST_F(SentencePieceTokenizerTest, NfkcModelDecodesAsPython) {
  const nlohmann::json python_text = test_util::run_oracle(
      python_oracle("encode_sentencepiece.py") + " --decode --model '" + model("python") + "'", *corpus_);
  const std::unique_ptr<Tokenizer> tok = load("GPTSentencePieceTokenizer", model("python"));
  for (const CorpusDocument& d : *corpus_)
    EXPECT_EQ(tok->decode(tok->encode(d.bytes)), python_text.at(d.path).get<std::string>()) << d.name;
  EXPECT_EQ(tok->decode(tok->encode("the free software")), "the free software");
  EXPECT_EQ(tok->decode(tok->encode("  the   free software ")), "the free software");
  EXPECT_EQ(tok->decode(tok->encode("\xef\xac\x81le 1\xef\xbc\x92")), "file 12");  // U+FB01 fi, fullwidth 2
}

// Megatron's vocabulary, eod and special tokens of each type, on a model with
// <unk> 0, <s> 1, </s> 2 and no pad (train_tokenizer's).
TEST_F(SentencePieceTokenizerTest, SpecialTokensAsMegatronDefinesThem) {
  const std::unique_ptr<Tokenizer> gpt = load("GPTSentencePieceTokenizer", model("bpe"));
  const std::unique_ptr<Tokenizer> llama = load("Llama2Tokenizer", model("bpe"));
  const std::unique_ptr<Tokenizer> sp = load("SentencePieceTokenizer", model("bpe"));
  const std::string text = "Hello <SEP> world";

  EXPECT_EQ(gpt->vocab_size(), 1000);
  EXPECT_EQ(gpt->eod(), 2);
  EXPECT_TRUE(gpt->encode("").empty());
  const std::vector<int32_t> plain = gpt->encode(text);
  EXPECT_EQ(std::count(plain.begin(), plain.end(), 2), 0);  // "<SEP>" is text here

  EXPECT_EQ(llama->vocab_size(), 1000);
  EXPECT_EQ(llama->eod(), 2);
  EXPECT_EQ(llama->encode(""), std::vector<int32_t>{1});
  std::vector<int32_t> with_bos = {1};
  with_bos.insert(with_bos.end(), plain.begin(), plain.end());
  EXPECT_EQ(llama->encode(text), with_bos);
  EXPECT_EQ(llama->decode(with_bos), text);  // BOS is a control piece: no text

  // <CLS> 1000, <SEP> 1001, <EOD> 1002, <MASK> 1003, <PAD> 1004; <s> and </s>
  // are the model's.
  EXPECT_EQ(sp->vocab_size(), 1005);
  EXPECT_EQ(sp->eod(), 1002);
  EXPECT_EQ(sp->encode("<CLS><SEP><EOD><MASK><PAD><s></s>"),
            (std::vector<int32_t>{1000, 1001, 1002, 1003, 1004, 1, 2}));
  std::vector<int32_t> cut = gpt->encode("Hello ");
  cut.push_back(1001);
  for (int32_t id : gpt->encode(" world")) cut.push_back(id);
  EXPECT_EQ(sp->encode(text), cut);
  // Megatron's detokenize writes each special token with a space either side.
  EXPECT_EQ(sp->decode(cut), "Hello  <SEP>  world");
  EXPECT_EQ(sp->decode(std::vector<int32_t>{1002}), " <EOD> ");
}

// A model without BOS and EOS: SentencePieceTokenizer adds <BOS> and <EOS>
// after <CLS>, <SEP>, <EOD>, <MASK> (its pad is the model's <pad>, id 1);
// the types that end documents with the model's EOS refuse it.
TEST_F(SentencePieceTokenizerTest, ModelWithoutBosEos) {
  const std::unique_ptr<Tokenizer> sp = load("SentencePieceTokenizer", model("python_no_bos"));
  EXPECT_EQ(sp->vocab_size(), 806);
  EXPECT_EQ(sp->eod(), 802);
  EXPECT_EQ(sp->encode("<pad><BOS><EOS>"), (std::vector<int32_t>{1, 804, 805}));
  for (const char* type : {"GPTSentencePieceTokenizer", "Llama2Tokenizer"})
    test_util::expect_error([&] { load(type, model("python_no_bos")); },
                            {"--tokenizer-model", model("python_no_bos"), "no EOS", type});
}

// A character cut between ids (byte fallback: U+1F600 is four byte pieces
// here) decodes to its bytes, where SentencePiece's own decode gives U+FFFD,
// so generation can join it (tokenizer.h); whole, it is the character.
TEST_F(SentencePieceTokenizerTest, CutCharacterDecodesToItsBytes) {
  const std::unique_ptr<Tokenizer> tok = load("GPTSentencePieceTokenizer", model("bpe"));
  const std::string emoji = "\xf0\x9f\x98\x80";
  const std::vector<int32_t> ids = tok->encode("a" + emoji);
  ASSERT_GE(ids.size(), 4u);
  const std::span<const int32_t> all(ids);
  EXPECT_EQ(tok->decode(all), "a" + emoji);
  EXPECT_EQ(tok->decode(all.first(ids.size() - 2)), "a\xf0\x9f");
  EXPECT_EQ(tok->decode(all.last(2)), "\x98\x80");
}

TEST_F(SentencePieceTokenizerTest, IdsOutsideTheVocabularyThrow) {
  for (const char* type : kTypes) {
    const std::unique_ptr<Tokenizer> tok = load(type, model("bpe"));
    const std::vector<int32_t> ids = {5, tok->vocab_size()};
    test_util::expect_error([&] { tok->decode(ids); }, {std::to_string(tok->vocab_size()), "position 1"});
    const std::vector<int32_t> negative = {-1};
    test_util::expect_error([&] { tok->decode(negative); }, {"-1", "position 0"});
  }
}

// A file that is no model (truncated, text, empty) is an error naming
// --tokenizer-model, the file and what SentencePiece says.
TEST_F(SentencePieceTokenizerTest, BadModelFilesNameTheFile) {
  const std::vector<uint8_t> good = test_util::read_bytes(model("bpe"));
  const std::string truncated = *dir_ / "truncated.model";
  test_util::write_bytes(truncated, std::vector<uint8_t>(good.begin(), good.begin() + good.size() / 2));
  const std::string text = *dir_ / "text.model";
  test_util::write_text(text, "this is not a SentencePiece model\n");
  const std::string empty = *dir_ / "empty.model";
  test_util::write_text(empty, "");
  for (const char* type : kTypes) {
    for (const std::string& path : {truncated, text})
      test_util::expect_error([&] { load(type, path); },
                              {"--tokenizer-model " + path + ": not a SentencePiece model", "ParseFromArray"});
    // An empty file parses as a model of no pieces.
    test_util::expect_error([&] { load(type, empty); },
                            {"--tokenizer-model " + empty + ": not a SentencePiece model", "unk is not defined"});
  }
}

}  // namespace
}  // namespace mt
