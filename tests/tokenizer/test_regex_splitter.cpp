// The regex pre-tokenizer (PCRE2) against JavaScript's regex engine on every
// corpus document (scripts/tokenizer_oracles/split_pieces.js), and the rules
// it adds: the invalid-UTF-8 rule, Rust's \s and $, gaps.
#include "tokenizer/regex_splitter.h"

#include <gtest/gtest.h>

#include "test_util.h"
#include "tokenizer_oracle.h"

namespace mt {
namespace {

std::vector<std::string> split(const RegexSplitter& s, std::string_view text,
                               RegexSplitter::Gaps gaps = RegexSplitter::Gaps::kDrop) {
  std::vector<std::string_view> pieces;
  s.split(text, pieces, gaps);
  return {pieces.begin(), pieces.end()};
}

TEST(RegexSplitter, OpenAIPatternsAreTheTiktokenPackages) {
  const nlohmann::json pat = test_util::run_json_command(
      "cd " + test_util::tokenizer_oracles_dir() +
      " && node -e 'const e = (n) => require(`tiktoken/encoders/${n}.json`).pat_str; "
      "console.log(JSON.stringify([e(\"gpt2\"), e(\"cl100k_base\"), e(\"o200k_base\")]))'");
  ASSERT_TRUE(pat.is_array() && pat.size() == 3) << pat;
  EXPECT_EQ(pat[0], kGpt2Pattern);
  EXPECT_EQ(pat[1], kCl100kPattern);
  EXPECT_EQ(pat[2], kO200kPattern);
}

TEST(RegexSplitter, PiecesEqualJavaScriptsOnTheCorpus) {
  const std::vector<test_util::CorpusDocument> docs = test_util::tokenizer_corpus();
  struct Case {
    const char* name;
    const char* pattern;
  };
  for (const Case c : {Case{"gpt2", kGpt2Pattern}, {"cl100k_base", kCl100kPattern}, {"o200k_base", kO200kPattern},
                       {"v2", kMegatronV2Pattern}}) {
    const nlohmann::json want = test_util::run_node_oracle(std::string("split_pieces.js --pattern ") + c.name, docs);
    ASSERT_TRUE(want.is_object()) << c.name;
    const RegexSplitter splitter(c.pattern, c.name);
    for (const auto& d : docs) {
      std::vector<size_t> lengths;
      std::string joined;
      for (const std::string& piece : split(splitter, d.bytes)) lengths.push_back(piece.size()), joined += piece;
      EXPECT_EQ(lengths, want.at(d.path).get<std::vector<size_t>>()) << c.name << ", " << d.name;
      EXPECT_EQ(joined, d.bytes) << c.name << ", " << d.name << ": the pattern leaves text out";
    }
  }
  // Megatron's v1 (possessive quantifiers, which JavaScript lacks) at least
  // compiles and covers the text; its ids are compared in test_tiktoken_tokenizer.
  const RegexSplitter v1(kMegatronV1Pattern, "v1");
  for (const auto& d : docs) {
    std::string joined;
    for (const std::string& piece : split(v1, d.bytes)) joined += piece;
    EXPECT_EQ(joined, d.bytes) << "v1, " << d.name;
  }
}

TEST(RegexSplitter, InvalidBytesArePiecesOfTheirOwn) {
  const RegexSplitter s(kGpt2Pattern, "gpt2");
  // A truncated 3-byte character, an overlong '/', a surrogate, a stray
  // continuation byte, a code point above U+10FFFF: each byte that does not
  // begin a valid character is a piece; the scan goes on at the next byte.
  EXPECT_EQ(split(s, "ab\xe2\x82 cd"), (std::vector<std::string>{"ab", "\xe2", "\x82", " cd"}));
  EXPECT_EQ(split(s, "\xc0\xaf"), (std::vector<std::string>{"\xc0", "\xaf"}));
  EXPECT_EQ(split(s, "x\xed\xa0\x80y"), (std::vector<std::string>{"x", "\xed", "\xa0", "\x80", "y"}));
  EXPECT_EQ(split(s, "\xf4\x90\x80\x80"), (std::vector<std::string>{"\xf4", "\x90", "\x80", "\x80"}));
  EXPECT_EQ(split(s, "\xe2\x82\xac!"), (std::vector<std::string>{"\xe2\x82\xac!"}));  // a valid euro sign
  // Each valid run is split on its own: "a  " before the bad byte ends its run.
  EXPECT_EQ(split(s, "a  \xff  b"), (std::vector<std::string>{"a", "  ", "\xff", " ", " b"}));
  EXPECT_EQ(valid_utf8_prefix("ok\xe2\x82"), 2u);
  EXPECT_EQ(valid_utf8_prefix(""), 0u);
}

TEST(RegexSplitter, RustsWhitespaceAndEndOfText) {
  // \s is Unicode's White_Space, as in Rust's regex (tiktoken): after "!",
  // a White_Space character is a piece of its own, any other joins the
  // punctuation (` ?[^\s\p{L}\p{N}]+`).
  const RegexSplitter s(kGpt2Pattern, "gpt2");
  for (const char* space : {"\xe3\x80\x80", "\xc2\x85", "\xc2\xa0", "\xe2\x80\xa8", "\t"})
    EXPECT_EQ(split(s, std::string("!") + space), (std::vector<std::string>{"!", space})) << space;
  // U+180E (PCRE2's \s takes it), U+FEFF (JavaScript's \s takes it), U+200B.
  for (const char* other : {"\xe1\xa0\x8e", "\xef\xbb\xbf", "\xe2\x80\x8b"})
    EXPECT_EQ(split(s, std::string("!") + other), (std::vector<std::string>{std::string("!") + other})) << other;
  // $ is the end of the text only, not also before a final newline.
  const RegexSplitter dollar(R"(ab$|a|b|\n)", "dollar");
  EXPECT_EQ(split(dollar, "ab\n"), (std::vector<std::string>{"a", "b", "\n"}));
  EXPECT_EQ(split(dollar, "ab"), (std::vector<std::string>{"ab"}));
}

TEST(RegexSplitter, GapsAreDroppedOrKept) {
  const RegexSplitter digits(R"(\d+)", "digits");
  EXPECT_EQ(split(digits, "ab12c3"), (std::vector<std::string>{"12", "3"}));
  EXPECT_EQ(split(digits, "ab12c3d", RegexSplitter::Gaps::kKeep),
            (std::vector<std::string>{"ab", "12", "c", "3", "d"}));
  // A pattern that can match empty text gives no empty piece.
  const RegexSplitter maybe(R"(x*)", "maybe");
  EXPECT_EQ(split(maybe, "axxb", RegexSplitter::Gaps::kKeep), (std::vector<std::string>{"a", "xx", "b"}));
}

TEST(RegexSplitter, BadPatternsAreErrors) {
  test_util::expect_error([] { RegexSplitter("a(b", "--tiktoken-pattern x"); },
                          {"--tiktoken-pattern x", "'a(b' does not compile", "offset 3"});
}

}  // namespace
}  // namespace mt
