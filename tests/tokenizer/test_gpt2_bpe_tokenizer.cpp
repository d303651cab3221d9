// GPT2BPETokenizer against GPT-2's encoder.py (the npm package gpt-3-encoder)
// and OpenAI's tiktoken gpt2 encoding, on every document of the sample corpus.
#include <gtest/gtest.h>

#include <filesystem>

#include "test_util.h"
#include "tokenizer/byte_pair_encoding.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer_oracle.h"

namespace mt {
namespace {

using test_util::CorpusDocument;

using test_util::vocabulary;

std::unique_ptr<Tokenizer> gpt2(const std::string& encoder_json, const std::string& vocab_bpe) {
  TokenizerOptions o;
  o.type = "GPT2BPETokenizer";
  o.vocab_file = encoder_json;
  o.merge_file = vocab_bpe;
  return make_tokenizer(read_tokenizer_spec(o));
}


TEST(GPT2BPETokenizer, EqualsGpt3EncoderAndTiktokenGpt2) {
  const std::unique_ptr<Tokenizer> tok = gpt2(vocabulary("gpt2-encoder.json"), vocabulary("gpt2-vocab.bpe"));
  EXPECT_EQ(tok->vocab_size(), 50257);
  EXPECT_EQ(tok->eod(), 50256);
  const test_util::TempDir dir;
  std::vector<CorpusDocument> docs = test_util::tokenizer_corpus();
  ASSERT_GE(docs.size(), 8u);
  // <|endoftext|> in a document is ordinary text, as in encoder.py.
  docs.push_back(test_util::written_document(dir / "special.txt", "a<|endoftext|>b\n"));
  for (const std::string oracle_script : {"encode_gpt2.js", "encode_tiktoken.js --encoding gpt2"}) {
    test_util::expect_oracle_ids(*tok, test_util::run_node_oracle(oracle_script, docs), docs, oracle_script);
    for (const CorpusDocument& d : docs) EXPECT_EQ(tok->decode(tok->encode(d.bytes)), d.bytes) << d.name;
  }
  const std::vector<int32_t> eod = {50256, 64};
  EXPECT_EQ(tok->decode(eod), "<|endoftext|>a");
  const std::vector<int32_t> past = {50257};
  test_util::expect_error([&] { tok->decode(past); }, {"token id 50257", "outside the vocabulary of 50257"});
}

// A small GPT-2 vocabulary: the 256 bytes (in GPT-2's stand-ins), then
// `extra` tokens, then <|endoftext|>.
std::string encoder_json(const std::vector<std::string>& extra) {
  nlohmann::json j = nlohmann::json::object();
  for (int b = 0; b < 256; ++b) j[bytes_to_unicode()[static_cast<size_t>(b)]] = b;
  for (const std::string& t : extra) j[t] = j.size();
  j["<|endoftext|>"] = j.size();
  return j.dump();
}

// GPT2BPETokenizer from these file contents.
void make_from(const std::string& vocab, const std::string& merges) {
  const test_util::TempDir dir;
  test_util::write_text(dir / "encoder.json", vocab);
  test_util::write_text(dir / "vocab.bpe", merges);
  gpt2(dir / "encoder.json", dir / "vocab.bpe");
}

TEST(GPT2BPETokenizer, SmallVocabularyMergesByLine) {
  const test_util::TempDir dir;
  test_util::write_text(dir / "encoder.json", encoder_json({"ab", "Ġab", "abc"}));
  test_util::write_text(dir / "vocab.bpe", "#version: 0.2\na b\nĠ ab\nab c\n");
  const std::unique_ptr<Tokenizer> tok = gpt2(dir / "encoder.json", dir / "vocab.bpe");
  EXPECT_EQ(tok->vocab_size(), 260);
  EXPECT_EQ(tok->eod(), 259);
  // "abc" is one token; in " abcd" the line-3 merge " ab" comes before "abc" (line 4).
  EXPECT_EQ(tok->encode("abc abcd"), (std::vector<int32_t>{258, 257, 'c', 'd'}));
}

TEST(GPT2BPETokenizer, BadFilesAreErrors) {
  const std::string vocab = encoder_json({"ab", "abc"});
  const std::string merges = "#version: 0.2\na b\nab c\n";
  make_from(vocab, merges);  // the good pair
  const std::string v = "--vocab-file", m = "--merge-file";
  test_util::expect_error([&] { make_from(vocab.substr(0, vocab.size() - 9), merges); },
                          {v, "encoder.json", "not JSON (truncated?)"});
  test_util::expect_error([&] { make_from("[1, 2]", merges); }, {v, "not a JSON object"});
  nlohmann::json j = nlohmann::json::parse(vocab);
  auto with = [&](const char* key, nlohmann::json value) {
    nlohmann::json bad = j;
    bad[key] = value;
    return bad.dump();
  };
  test_util::expect_error([&] { make_from(with("ab", "x"), merges); }, {v, "entry \"ab\"", "not an integer"});
  test_util::expect_error([&] { make_from(with("ab", 5000), merges); },
                          {v, "entry \"ab\"", "not an integer in [0, 259)"});
  test_util::expect_error([&] { make_from(with("ab", 7), merges); }, {v, "have the same id 7"});
  nlohmann::json space = j;
  space["a b"] = space["ab"];
  space.erase("ab");
  test_util::expect_error([&] { make_from(space.dump(), merges); }, {v, "entry \"a b\"", "stand-ins for bytes"});
  nlohmann::json no_byte = j;
  no_byte["zz"] = no_byte["Ā"];  // U+0100, byte 0x00
  no_byte.erase("Ā");
  test_util::expect_error([&] { make_from(no_byte.dump(), merges); }, {v, "no token for byte 0x00"});
  nlohmann::json no_eod = j;
  no_eod["zz"] = no_eod["<|endoftext|>"];
  no_eod.erase("<|endoftext|>");
  test_util::expect_error([&] { make_from(no_eod.dump(), merges); }, {v, "no \"<|endoftext|>\" token"});

  test_util::expect_error([&] { make_from(vocab, "a b\nab c\n"); }, {m, "vocab.bpe", "line 1", "#version"});
  test_util::expect_error([&] { make_from(vocab, "#version: 0.2\na b\nab c"); }, {m, "no newline (truncated?)"});
  test_util::expect_error([&] { make_from(vocab, "#version: 0.2\na b\nab\n"); }, {m, "line 3", "'ab' is not a merge"});
  test_util::expect_error([&] { make_from(vocab, "#version: 0.2\na b c\n"); }, {m, "line 2", "not a merge of two"});
  test_util::expect_error([&] { make_from(vocab, "#version: 0.2\n\n"); }, {m, "line 2", "not a merge of two"});
  test_util::expect_error([&] { make_from(vocab, "#version: 0.2\na b\nab x\n"); },
                          {m, "line 3", "'abx' (the merged token) is not a token of --vocab-file"});
  test_util::expect_error([&] { make_from(vocab, "#version: 0.2\na b\nab é\n"); },
                          {m, "line 3", "not a token"});
  test_util::expect_error([&] { make_from(vocab, "#version: 0.2\na b\nab c\na b\n"); },
                          {m, "line 4", "makes the token line 2 makes already"});
  test_util::expect_error([&] { make_from(vocab, "#version: 0.2\nab c\na b\n"); },
                          {m, "line 3", "'a b' makes a token line 2 merges already"});
}

}  // namespace
}  // namespace mt
