// TikTokenizer against OpenAI's encoder: the npm packages tiktoken (OpenAI's
// Rust core as WASM) and js-tiktoken, on every document of the sample corpus
// (scripts/tokenizer_oracles/encode_tiktoken.js, encode_megatron_tiktoken.js).
#include <gtest/gtest.h>

#include <filesystem>
#include <thread>

#include "test_util.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer_oracle.h"

namespace mt {
namespace {

using test_util::CorpusDocument;

using test_util::vocabulary;

std::unique_ptr<Tokenizer> openai(const std::string& encoding) {
  TokenizerOptions o;
  o.type = "TikTokenizer";
  o.tokenizer_model = vocabulary(encoding + ".tiktoken");
  o.tiktoken_pattern = encoding;
  return make_tokenizer(read_tokenizer_spec(o));
}

std::unique_ptr<Tokenizer> megatron(const std::string& pattern, int num_special, int vocab_size) {
  TokenizerOptions o;
  o.type = "TikTokenizer";
  o.tokenizer_model = vocabulary("cl100k_base.megatron.json");
  o.tiktoken_pattern = pattern;
  o.tiktoken_num_special_tokens = num_special;
  o.vocab_size = vocab_size;
  return make_tokenizer(read_tokenizer_spec(o));
}

// Each document's ids equal the oracle script's and decode back to the
// document.
void expect_as_oracle(const Tokenizer& tok, const std::string& script_and_options,
                      const std::vector<CorpusDocument>& docs, const std::string& what) {
  test_util::expect_oracle_ids(tok, test_util::run_node_oracle(script_and_options, docs), docs, what);
  for (const CorpusDocument& d : docs) EXPECT_EQ(tok.decode(tok.encode(d.bytes)), d.bytes) << what << ", " << d.name;
}

// Sample documents that are not in the corpus, written to files for the oracles.
std::vector<CorpusDocument> documents(const test_util::TempDir& dir, std::vector<std::string> texts) {
  std::vector<CorpusDocument> docs;
  for (size_t i = 0; i < texts.size(); ++i)
    docs.push_back(test_util::written_document(dir / ("doc" + std::to_string(i) + ".txt"), texts[i]));
  return docs;
}

struct OpenAIEncoding {
  std::string name;
  int32_t vocab_size;
  int32_t eod;
};

TEST(TikTokenizer, OpenAIEncodingsEqualTiktokenAndJsTiktoken) {
  const std::vector<CorpusDocument> docs = test_util::tokenizer_corpus();
  ASSERT_GE(docs.size(), 8u);
  for (const OpenAIEncoding& e : {OpenAIEncoding{"cl100k_base", 100277, 100257}, {"o200k_base", 200019, 199999},
                                  {"gpt2", 50257, 50256}}) {
    const std::unique_ptr<Tokenizer> tok = openai(e.name);
    EXPECT_EQ(tok->vocab_size(), e.vocab_size) << e.name;
    EXPECT_EQ(tok->eod(), e.eod) << e.name;
    for (const std::string package : {"tiktoken", "js-tiktoken"})
      expect_as_oracle(*tok, "encode_tiktoken.js --encoding " + e.name + " --package " + package, docs,
                       e.name + " against " + package);
  }
}

TEST(TikTokenizer, SpecialTokensAreOrdinaryTextAndDecodeToTheirStrings) {
  const std::unique_ptr<Tokenizer> tok = openai("cl100k_base");
  const test_util::TempDir dir;
  const std::vector<CorpusDocument> docs =
      documents(dir, {"a<|endoftext|>b <|fim_prefix|><|endofprompt|>", "  trailing spaces \n\n  ", "x"});
  expect_as_oracle(*tok, "encode_tiktoken.js --encoding cl100k_base", docs, "cl100k_base specials");
  for (int32_t id : tok->encode(docs[0].bytes)) EXPECT_LT(id, 100256) << "a special id from ordinary text";
  const std::vector<int32_t> specials = {100257, 100258, 100259, 100260, 100276};
  EXPECT_EQ(tok->decode(specials), "<|endoftext|><|fim_prefix|><|fim_middle|><|fim_suffix|><|endofprompt|>");
  const std::vector<int32_t> gap = {15, 100256};
  test_util::expect_error([&] { tok->decode(gap); }, {"token id 100256 at position 1", "no token"});
  const std::vector<int32_t> past = {100277};
  test_util::expect_error([&] { tok->decode(past); }, {"token id 100277", "outside the vocabulary of 100277"});
}

TEST(TikTokenizer, MegatronJsonEqualsShiftedCl100k) {
  const std::vector<CorpusDocument> docs = test_util::tokenizer_corpus();
  for (const std::string pattern : {"v1", "v2"}) {
    const std::unique_ptr<Tokenizer> tok = megatron(pattern, 1000, 100256 + 1000);
    EXPECT_EQ(tok->vocab_size(), 101256);
    EXPECT_EQ(tok->eod(), 2);  // </s>
    expect_as_oracle(*tok, "encode_megatron_tiktoken.js --pattern " + pattern, docs,
                     "Megatron " + pattern);
  }
  // Another number of special tokens shifts every id.
  const std::unique_ptr<Tokenizer> tok7 = megatron("v2", 7, 100256 + 7);
  expect_as_oracle(*tok7, "encode_megatron_tiktoken.js --pattern v2 --num-special-tokens 7", docs,
                   "Megatron v2, 7 special tokens");
}

TEST(TikTokenizer, MegatronSpecialTokensAndVocabSize) {
  // Megatron's tiktoken_tokenizer.py: the special tokens are the first ids
  // and their strings in the text are those ids.
  const std::unique_ptr<Tokenizer> tok = megatron("", 1000, 101256);  // empty pattern: Megatron's v2
  const test_util::TempDir dir;
  const std::vector<CorpusDocument> docs =
      documents(dir, {"<s>Hello</s> <SPECIAL_999><SPECIAL_1000><unk><<sep>> <mask", "<pad>\xff<cls>"});
  expect_as_oracle(*tok, "encode_megatron_tiktoken.js --pattern v2", docs, "Megatron specials");
  const std::vector<int32_t> ids = tok->encode("<s>a</s>");
  EXPECT_EQ(ids, (std::vector<int32_t>{1, 'a' + 1000, 2}));
  const std::vector<int32_t> named = {0, 1, 2, 3, 4, 5, 6, 7, 999};
  EXPECT_EQ(tok->decode(named), "<unk><s></s><mask><pad><cls><sep><SPECIAL_7><SPECIAL_999>");

  // --vocab-size keeps the first ranks (Megatron cuts the vocabulary there).
  const std::unique_ptr<Tokenizer> cut = megatron("v2", 1000, 2000);
  EXPECT_EQ(cut->vocab_size(), 2000);
  for (const CorpusDocument& d : test_util::tokenizer_corpus()) {
    const std::vector<int32_t> cut_ids = cut->encode(d.bytes);
    EXPECT_LT(*std::max_element(cut_ids.begin(), cut_ids.end()), 2000) << d.name;
    EXPECT_EQ(cut->decode(cut_ids), d.bytes) << d.name;
  }
  // Megatron's default size, 131072, needs more tokens than cl100k_base has.
  test_util::expect_error([&] { megatron("v2", 1000, 0); },
                          {"cl100k_base.megatron.json", "100256 tokens, fewer than the 130072", "--vocab-size"});
}

TEST(TikTokenizer, EncodesFromSeveralThreadsAtOnce) {
  const std::unique_ptr<Tokenizer> tok = openai("o200k_base");
  const std::vector<CorpusDocument> docs = test_util::tokenizer_corpus();
  std::vector<std::vector<int32_t>> want;
  for (const CorpusDocument& d : docs) want.push_back(tok->encode(d.bytes));
  std::vector<int> mismatches(4, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      for (int round = 0; round < 20; ++round)
        for (size_t i = 0; i < docs.size(); ++i) mismatches[t] += tok->encode(docs[i].bytes) != want[i];
    });
  for (std::thread& t : threads) t.join();
  for (int t = 0; t < 4; ++t) EXPECT_EQ(mismatches[t], 0) << "thread " << t;
}

// A TikTokenizer from these bytes as its --tokenizer-model.
void make_from(const std::string& bytes, const std::string& pattern, int vocab_size = 0, int num_special = 1000) {
  const test_util::TempDir dir;
  TokenizerOptions o;
  o.type = "TikTokenizer";
  o.tokenizer_model = dir / "model";
  o.tiktoken_pattern = pattern;
  o.vocab_size = vocab_size;
  o.tiktoken_num_special_tokens = num_special;
  test_util::write_text(o.tokenizer_model, bytes);
  make_tokenizer(read_tokenizer_spec(o));
}

TEST(TikTokenizer, BadTiktokenFilesAreErrors) {
  const std::string flag = "--tokenizer-model";
  test_util::expect_error([&] { make_from("IQ== 0\nIg== 1\n", "cl100k_base"); },
                          {flag, "2 ranks, but OpenAI's cl100k_base has 100256"});
  test_util::expect_error([&] { make_from("IQ== 0\nIg== 1\n", ""); }, {flag, "--tiktoken-pattern must name"});
  test_util::expect_error([&] { make_from("IQ== 0\nIg== 1\n", "v2"); }, {flag, "OpenAI's .tiktoken", "not 'v2'"});
  test_util::expect_error([&] { make_from("IQ== 0\nIg==1\n", "gpt2"); }, {flag, "line 2", "not 'base64-token rank'"});
  test_util::expect_error([&] { make_from("IQ== 0\nI*== 1\n", "gpt2"); }, {flag, "line 2", "'I*==' is not base64"});
  test_util::expect_error([&] { make_from("IQ== 0\nIR== 1\n", "gpt2"); }, {flag, "line 2", "not base64"});
  test_util::expect_error([&] { make_from("IQ== 0\nIg== x1\n", "gpt2"); }, {flag, "line 2", "rank 'x1'"});
  test_util::expect_error([&] { make_from("IQ== 0\nIQ== 1\n", "gpt2"); }, {flag, "line 2", "on line 1 too"});
  test_util::expect_error([&] { make_from("IQ== 0\nIg== 0\n", "gpt2"); }, {flag, "line 2", "rank 0 is on line 1"});
  test_util::expect_error([&] { make_from("IQ== 0\nIg== 2\n", "gpt2"); }, {flag, "no line has rank 1"});
  test_util::expect_error([&] { make_from("IQ== 0\nIg== 1", "gpt2"); }, {flag, "no newline (truncated?)"});
  test_util::expect_error([&] { make_from("", "gpt2"); }, {flag, "empty file"});
  // A rank far beyond the file's lines is a missing rank, not a table of
  // 10^9 (the fuzzer's out-of-memory).
  test_util::expect_error([&] { make_from("QQ== 1000000000\n", "gpt2"); }, {flag, "no line has rank 0"});
}

// A Megatron JSON vocabulary: the 256 bytes, then `extra` tokens.
std::string megatron_json(const std::vector<std::string>& extra_base64) {
  nlohmann::json list = nlohmann::json::array();
  static const char* kBase64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  for (int b = 0; b < 256; ++b)
    list.push_back({{"rank", b},
                    {"token_bytes", std::string{kBase64[b >> 2], kBase64[(b & 3) << 4], '=', '='}},
                    {"token_str", ""}});
  for (const std::string& t : extra_base64)
    list.push_back({{"rank", list.size()}, {"token_bytes", t}, {"token_str", ""}});
  return list.dump();
}

TEST(TikTokenizer, SmallMegatronVocabularyMergesByRank) {
  // "ab" is rank 256, "abc" 257: "abcab" merges ab, ab, then abc.
  const test_util::TempDir dir;
  TokenizerOptions o;
  o.type = "TikTokenizer";
  o.tokenizer_model = dir / "model.json";
  o.tiktoken_num_special_tokens = 7;
  o.vocab_size = 7 + 258;
  test_util::write_text(o.tokenizer_model, megatron_json({"YWI=", "YWJj"}));
  const std::unique_ptr<Tokenizer> tok = make_tokenizer(read_tokenizer_spec(o));
  EXPECT_EQ(tok->encode("abcab"), (std::vector<int32_t>{257 + 7, 256 + 7}));
  EXPECT_EQ(tok->encode("<s>"), (std::vector<int32_t>{1}));
  EXPECT_EQ(tok->vocab_size(), 265);
}

TEST(TikTokenizer, BadMegatronVocabulariesAreErrors) {
  const std::string flag = "--tokenizer-model";
  const std::string good = megatron_json({"YWI="});
  test_util::expect_error([&] { make_from(good.substr(0, good.size() - 5), "v2", 264, 7); },
                          {flag, "not JSON (truncated?)"});
  test_util::expect_error([&] { make_from("[1]", "v2", 8, 7); }, {flag, "entry 0", "exactly rank, token_bytes"});
  test_util::expect_error([&] { make_from(good, "v3", 264, 7); }, {flag, "v1 or v2, not 'v3'"});
  test_util::expect_error([&] { make_from(good, "cl100k_base", 264, 7); }, {flag, "Megatron's JSON"});
  test_util::expect_error([&] { make_from(good, "v2", 265, 7); }, {flag, "257 tokens, fewer than the 258"});
  test_util::expect_error([&] { make_from(good, "v2", 264, 6); }, {"--tiktoken-num-special-tokens 6"});
  nlohmann::json j = nlohmann::json::parse(good);
  auto with = [&](size_t entry, const char* key, nlohmann::json value) {
    nlohmann::json bad = j;
    bad[entry][key] = value;
    return bad.dump();
  };
  test_util::expect_error([&] { make_from(with(256, "rank", 3), "v2", 264, 7); }, {flag, "entry 256: rank 3, not 256"});
  test_util::expect_error([&] { make_from(with(256, "token_bytes", "YW*="), "v2", 264, 7); },
                          {flag, "entry 256", "not base64"});
  test_util::expect_error([&] { make_from(with(256, "token_bytes", "YQ=="), "v2", 264, 7); },
                          {flag, "entry 256", "same token_bytes as entry 97"});
  test_util::expect_error([&] { make_from(with(3, "token_bytes", "YQ=="), "v2", 264, 7); },
                          {flag, "entry 3", "bytes 0..255 in order"});
  nlohmann::json extra_key = j;
  extra_key[5]["x"] = 1;
  test_util::expect_error([&] { make_from(extra_key.dump(), "v2", 264, 7); }, {flag, "entry 5"});
}

}  // namespace
}  // namespace mt
