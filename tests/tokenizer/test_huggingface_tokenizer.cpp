// HuggingFaceTokenizer against the npm package @huggingface/tokenizers
// (scripts/tokenizer_oracles/encode_huggingface.js), on tokenizer.json files
// laid out as GPT-2's, Llama-3's and Qwen2's are
// (scripts/tokenizer_oracles/make_hf_tokenizers.js, from the vocabularies
// the npm packages ship).
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "test_util.h"
#include "tokenizer/byte_pair_encoding.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer_oracle.h"

namespace mt {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using test_util::CorpusDocument;

// The folder of make_hf_tokenizers.js's files ({gpt2,llama3,qwen2}/tokenizer.json),
// made once for all the test processes (ctest runs each test in its own):
// named by the script's modification time, filled under a name of its own
// and renamed into place, so no test sees half of it.
const std::string& hf_tokenizers_dir() {
  static const std::string dir = [] {
    const std::string script = test_util::tokenizer_oracles_dir() + "/make_hf_tokenizers.js";
    const auto stamp = static_cast<uint64_t>(fs::last_write_time(script).time_since_epoch().count());
    const fs::path done = fs::path(MT_TEST_CACHE_DIR) / ("hf_tokenizers-" + std::to_string(stamp));
    if (fs::exists(done)) return done.string();
    const fs::path filling = done.string() + ".filling-" + std::to_string(::getpid());
    fs::create_directories(filling);
    const std::string command = "node '" + script + "' '" + filling.string() + "'";
    EXPECT_EQ(std::system(command.c_str()), 0) << command;
    std::error_code ec;
    fs::rename(filling, done, ec);  // fails when another test got there first: theirs is as good
    if (ec) fs::remove_all(filling, ec);
    return done.string();
  }();
  return dir;
}

std::string layout_path(const std::string& layout) { return hf_tokenizers_dir() + "/" + layout + "/tokenizer.json"; }

std::unique_ptr<Tokenizer> load(const std::string& path) {
  TokenizerOptions options;
  options.type = "HuggingFaceTokenizer";
  options.tokenizer_model = path;
  return make_tokenizer(read_tokenizer_spec(options));
}

// The corpus, and a document of every layout's special tokens written in
// text, next to words, spaces, each other and invalid bytes.
std::vector<CorpusDocument> documents(const test_util::TempDir& tmp) {
  std::vector<CorpusDocument> docs = test_util::tokenizer_corpus();
  const std::string specials =
      "Hello<|endoftext|>world <|endoftext|> <|begin_of_text|>Hi<|end_of_text|><|eot_id|>\n"
      "<|im_start|>user\nWhat's up?<|im_end|>\n<|im_start|>assistant\n<|reserved_special_token_17|> "
      "<|endoftext|<|endoftext|>> \xff<|end_of_text|>\xfe <|im_end";
  docs.push_back(test_util::written_document(tmp / "special_tokens.txt", specials));
  return docs;
}

// Every document's ids equal the oracle's (tokenizers.js with the same file).
void expect_oracle_ids(const Tokenizer& tokenizer, const std::string& tokenizer_json,
                       const std::vector<CorpusDocument>& docs) {
  const json oracle = test_util::run_node_oracle("encode_huggingface.js --tokenizer '" + tokenizer_json + "'", docs);
  test_util::expect_oracle_ids(tokenizer, oracle, docs, tokenizer_json);
}

// decode(encode(text)), less the post-processor's special tokens at the
// start (Llama-3's <|begin_of_text|>, which decodes to its text).
std::string round_trip(const Tokenizer& tokenizer, const std::string& text, size_t leading_specials) {
  const std::vector<int32_t> ids = tokenizer.encode(text);
  return tokenizer.decode(std::span<const int32_t>(ids).subspan(leading_specials));
}

std::string replace_all(std::string text, const std::string& from, const std::string& to) {
  for (size_t at = text.find(from); at != std::string::npos; at = text.find(from, at + to.size()))
    text.replace(at, from.size(), to);
  return text;
}

TEST(HuggingFaceTokenizer, Gpt2LayoutMatchesTheOracleAndRoundTrips) {
  const test_util::TempDir tmp;
  const std::vector<CorpusDocument> docs = documents(tmp);
  const auto tokenizer = load(layout_path("gpt2"));
  expect_oracle_ids(*tokenizer, layout_path("gpt2"), docs);
  for (const CorpusDocument& d : docs) EXPECT_EQ(round_trip(*tokenizer, d.bytes, 0), d.bytes) << d.name;
  EXPECT_EQ(tokenizer->vocab_size(), 50257);
  EXPECT_EQ(tokenizer->eod(), 50256);  // <|endoftext|>
  EXPECT_EQ(tokenizer->encode("<|endoftext|>"), std::vector<int32_t>{50256});
  EXPECT_EQ(tokenizer->encode("Hello world"), (std::vector<int32_t>{15496, 995}));  // GPT-2's own example ids
}

TEST(HuggingFaceTokenizer, Llama3LayoutMatchesTheOracleAndRoundTrips) {
  const test_util::TempDir tmp;
  const std::vector<CorpusDocument> docs = documents(tmp);
  const auto tokenizer = load(layout_path("llama3"));
  expect_oracle_ids(*tokenizer, layout_path("llama3"), docs);
  // Every text starts with <|begin_of_text|> (the TemplateProcessing).
  const int32_t begin_of_text = 100256;  // after cl100k_base's 100256 ranks
  for (const CorpusDocument& d : docs) {
    EXPECT_EQ(tokenizer->encode(d.bytes).front(), begin_of_text) << d.name;
    EXPECT_EQ(round_trip(*tokenizer, d.bytes, 1), d.bytes) << d.name;
  }
  EXPECT_EQ(tokenizer->encode(""), std::vector<int32_t>{begin_of_text});
  EXPECT_EQ(tokenizer->vocab_size(), 100256 + 256);
  EXPECT_EQ(tokenizer->eod(), 100257);  // <|end_of_text|>
  EXPECT_EQ(tokenizer->encode("<|end_of_text|>"), (std::vector<int32_t>{begin_of_text, 100257}));
}

TEST(HuggingFaceTokenizer, Qwen2LayoutMatchesTheOracleAndNormalizesToNfc) {
  const test_util::TempDir tmp;
  const std::vector<CorpusDocument> docs = documents(tmp);
  const auto tokenizer = load(layout_path("qwen2"));
  expect_oracle_ids(*tokenizer, layout_path("qwen2"), docs);
  EXPECT_EQ(tokenizer->vocab_size(), 100256 + 3);
  EXPECT_EQ(tokenizer->eod(), 100256);  // <|endoftext|>

  // The NFC normalizer: text is tokenized as its NFC form, so decode gives
  // that form: every document round-trips but for the characters NFC
  // composes, which come back composed.
  const std::string decomposed_e = "e\xcc\x81", precomposed_e = "\xc3\xa9";
  EXPECT_EQ(tokenizer->encode(decomposed_e), tokenizer->encode(precomposed_e));
  const auto llama3 = load(layout_path("llama3"));  // no normalizer
  EXPECT_NE(llama3->encode(decomposed_e), llama3->encode(precomposed_e));
  for (const CorpusDocument& d : docs) {
    std::string expected = d.bytes;
    if (d.name == "prose_many_scripts.txt") {
      expected = replace_all(expected, decomposed_e, precomposed_e);
      expected = replace_all(expected, "A\xcc\x8a", "\xc3\x85");     // A + ring above: Å
      expected = replace_all(expected, "\xe2\x84\xab", "\xc3\x85");  // the angstrom sign: Å
      expected = replace_all(expected, "\xe1\x84\x80\xe1\x85\xa1\xe1\x86\xa8", "\xea\xb0\x81");  // jamo: 각
      ASSERT_NE(expected, d.bytes);
    }
    EXPECT_EQ(round_trip(*tokenizer, d.bytes, 0), expected) << d.name;
  }
}

// Options the published files leave off, each against the oracle: a space
// put in front of every piece (ByteLevel add_prefix_space), a String split
// pattern and a normalizer Sequence.
TEST(HuggingFaceTokenizer, OtherOptionsMatchTheOracle) {
  const test_util::TempDir tmp;
  const std::vector<CorpusDocument> docs = documents(tmp);

  json gpt2 = json::parse(test_util::read_bytes(layout_path("gpt2")));
  gpt2["pre_tokenizer"]["add_prefix_space"] = true;
  test_util::write_text(tmp / "gpt2_prefix_space.json", gpt2.dump());
  const auto prefixed = load(tmp / "gpt2_prefix_space.json");
  expect_oracle_ids(*prefixed, tmp / "gpt2_prefix_space.json", docs);
  EXPECT_EQ(prefixed->decode(prefixed->encode("Hi")), " Hi");

  json llama3 = json::parse(test_util::read_bytes(layout_path("llama3")));
  const json literal_split = {
      {"type", "Split"}, {"pattern", {{"String", "o.r"}}}, {"behavior", "Isolated"}, {"invert", false}};
  json& steps = llama3["pre_tokenizer"]["pretokenizers"];
  steps.insert(steps.begin(), literal_split);
  llama3["normalizer"] = {{"type", "Sequence"}, {"normalizers", {{{"type", "NFC"}}}}};
  test_util::write_text(tmp / "llama3_variant.json", llama3.dump());
  const auto variant = load(tmp / "llama3_variant.json");
  expect_oracle_ids(*variant, tmp / "llama3_variant.json", docs);
  // "o.r" is cut out as it is; its "." is no regex wildcard.
  const auto llama3_plain = load(layout_path("llama3"));
  EXPECT_NE(variant->encode("wo.rd"), llama3_plain->encode("wo.rd"));
  EXPECT_EQ(variant->encode("woxrd"), llama3_plain->encode("woxrd"));

  // With no decoder, tokenizers joins the tokens' strings with spaces.
  gpt2 = json::parse(test_util::read_bytes(layout_path("gpt2")));
  gpt2["decoder"] = nullptr;
  test_util::write_text(tmp / "gpt2_no_decoder.json", gpt2.dump());
  const auto no_decoder = load(tmp / "gpt2_no_decoder.json");
  EXPECT_EQ(no_decoder->decode(no_decoder->encode("Hi there")), "Hi \xc4\xa0there");  // "Hi Ġthere"
}

// A tokenizer.json of the 256 bytes, "ab" (one merge) and </s> added.
json tiny_tokenizer() {
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[bytes_to_unicode()[b]] = b;
  vocab["ab"] = 256;
  return {{"version", "1.0"},
          {"added_tokens",
           {{{"id", 257}, {"content", "</s>"}, {"single_word", false}, {"lstrip", false}, {"rstrip", false},
             {"normalized", false}, {"special", true}}}},
          {"normalizer", nullptr},
          {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}}},
          {"post_processor", nullptr},
          {"decoder", {{"type", "ByteLevel"}}},
          {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", {"a b"}}}}};
}

std::unique_ptr<Tokenizer> from_json(const std::string& text) {
  TokenizerSpec spec;
  spec.options.type = "HuggingFaceTokenizer";
  spec.options.tokenizer_model = "/x/tokenizer.json";
  spec.files["model"] = text;
  return make_tokenizer(spec);
}

TEST(HuggingFaceTokenizer, ReadsASmallFileExactly) {
  const auto tokenizer = from_json(tiny_tokenizer().dump());
  EXPECT_EQ(tokenizer->vocab_size(), 258);
  EXPECT_EQ(tokenizer->eod(), 257);
  // "ab", " " then "ab" (no "Ġab" token), </s> split out of the text.
  EXPECT_EQ(tokenizer->encode("ab ab</s>"), (std::vector<int32_t>{256, ' ', 256, 257}));
  EXPECT_EQ(tokenizer->decode(tokenizer->encode("ab ab</s>")), "ab ab</s>");
  std::vector<int32_t> bad = {'a', 258};
  test_util::expect_error([&] { tokenizer->decode(bad); }, {"258", "position 1"});
}

// Each refused component and malformed file: an error naming the flag, the
// file and the JSON path.
TEST(HuggingFaceTokenizer, RefusesWhatItDoesNotImplementByName) {
  struct Case {
    std::string what;
    std::function<void(json&)> change;
    std::vector<std::string> message;
  };
  const json split = {{"type", "Split"}, {"pattern", {{"Regex", "\\s+"}}}, {"behavior", "Isolated"}, {"invert", false}};
  const json byte_level = {{"type", "ByteLevel"}, {"add_prefix_space", false}};
  const std::vector<Case> cases = {
      {"NFKC", [](json& j) { j["normalizer"] = {{"type", "NFKC"}}; }, {"normalizer", "type NFKC is not supported"}},
      {"a normalizer in a Sequence",
       [](json& j) { j["normalizer"] = {{"type", "Sequence"}, {"normalizers", {{{"type", "NFC"}}, {{"type", "Lowercase"}}}}}; },
       {"normalizer.normalizers[1]", "type Lowercase is not supported"}},
      {"Metaspace", [](json& j) { j["pre_tokenizer"] = {{"type", "Metaspace"}}; },
       {"pre_tokenizer", "type Metaspace is not supported", "ByteLevel, Split, Sequence"}},
      {"no ByteLevel", [&](json& j) { j["pre_tokenizer"] = split; }, {"pre_tokenizer", "has no ByteLevel"}},
      {"no pre-tokenizer", [](json& j) { j["pre_tokenizer"] = nullptr; }, {"pre_tokenizer", "is null"}},
      {"Split after ByteLevel",
       [&](json& j) { j["pre_tokenizer"] = {{"type", "Sequence"}, {"pretokenizers", {byte_level, split}}}; },
       {"pre_tokenizer.pretokenizers[1]", "Split after ByteLevel"}},
      {"MergedWithPrevious",
       [&](json& j) {
         json s = split;
         s["behavior"] = "MergedWithPrevious";
         j["pre_tokenizer"] = {{"type", "Sequence"}, {"pretokenizers", {s, byte_level}}};
       },
       {"pre_tokenizer.pretokenizers[0].behavior", "MergedWithPrevious is not supported (supported: Isolated)"}},
      {"a bad regex",
       [&](json& j) {
         json s = split;
         s["pattern"] = {{"Regex", "(a"}};
         j["pre_tokenizer"] = {{"type", "Sequence"}, {"pretokenizers", {s, byte_level}}};
       },
       {"pre_tokenizer.pretokenizers[0].pattern", "does not compile"}},
      {"WordPiece", [](json& j) { j["model"]["type"] = "WordPiece"; }, {"model", "type WordPiece is not supported"}},
      {"dropout", [](json& j) { j["model"]["dropout"] = 0.1; }, {"model.dropout", "0.1 is not supported"}},
      {"a subword prefix", [](json& j) { j["model"]["continuing_subword_prefix"] = "##"; },
       {"model.continuing_subword_prefix", "\"##\" is not supported"}},
      {"RobertaProcessing", [](json& j) { j["post_processor"] = {{"type", "RobertaProcessing"}}; },
       {"post_processor", "type RobertaProcessing is not supported"}},
      {"a pair in the template",
       [](json& j) {
         j["post_processor"] = {{"type", "TemplateProcessing"},
                                {"single", {{{"Sequence", {{"id", "B"}, {"type_id", 0}}}}}},
                                {"special_tokens", json::object()}};
       },
       {"post_processor.single[0]", "sequence B"}},
      {"a template's unknown special token",
       [](json& j) {
         j["post_processor"] = {{"type", "TemplateProcessing"},
                                {"single", {{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}}, {{"Sequence", {{"id", "A"}}}}}},
                                {"special_tokens", json::object()}};
       },
       {"post_processor.special_tokens", "has no \"<s>\""}},
      {"Metaspace decoder", [](json& j) { j["decoder"] = {{"type", "Metaspace"}}; },
       {"decoder", "type Metaspace is not supported"}},
      {"lstrip", [](json& j) { j["added_tokens"][0]["lstrip"] = true; }, {"added_tokens[0]", "lstrip true is not supported"}},
      {"an added token's id", [](json& j) { j["added_tokens"][0]["id"] = 300; },
       {"added_tokens[0].id", "has id 300, but tokenizers gives it 257"}},
      {"no model", [](json& j) { j.erase("model"); }, {"has no \"model\""}},
      {"a merge of three", [](json& j) { j["model"]["merges"] = {"a b c"}; }, {"model.merges[0]", "\"a b c\""}},
      {"a merge outside the vocabulary", [](json& j) { j["model"]["merges"] = {"a b", "b c"}; },
       {"model.merges[1]", "\"bc\" is not in model.vocab"}},
      {"a merge twice", [](json& j) { j["model"]["merges"] = {"a b", json::array({"a", "b"})}; },
       {"model.merges[1]", "already model.merges[0]"}},
      {"a merge that is neither form", [](json& j) { j["model"]["merges"] = {7}; }, {"model.merges[0]", "neither"}},
      {"a byte missing",
       [](json& j) {
         j["model"]["vocab"].erase(bytes_to_unicode()['z']);
         j["model"]["vocab"]["ab"] = 'z';
       },
       {"model.vocab", "no token for byte 0x7a"}},
      {"a hole in the ids", [](json& j) { j["model"]["vocab"]["ab"] = 400; }, {"model.vocab", "\"ab\" has id 400"}},
      {"no end of document", [](json& j) { j["added_tokens"][0]["content"] = "<pad>"; },
       {"no end-of-document token", "<|endoftext|>"}},
  };
  for (const Case& c : cases) {
    json j = tiny_tokenizer();
    c.change(j);
    std::vector<std::string> parts = {"--tokenizer-model /x/tokenizer.json"};
    parts.insert(parts.end(), c.message.begin(), c.message.end());
    SCOPED_TRACE(c.what);
    test_util::expect_error([&] { from_json(j.dump()); }, parts);
  }
  const std::string text = tiny_tokenizer().dump();
  test_util::expect_error([&] { from_json(text.substr(0, text.size() / 2)); },
                          {"--tokenizer-model /x/tokenizer.json", "not JSON"});
  test_util::expect_error([&] { from_json("[1, 2]"); }, {"--tokenizer-model /x/tokenizer.json", "not a tokenizer.json"});
  // Deep nesting is refused before anything recurses over it (the fuzzer's
  // stack overflow).
  test_util::expect_error([&] { from_json(std::string(5000, '[') + std::string(5000, ']')); },
                          {"--tokenizer-model /x/tokenizer.json", "nested deeper than 100"});
}

}  // namespace
}  // namespace mt
