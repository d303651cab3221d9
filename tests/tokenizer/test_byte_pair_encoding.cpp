#include "tokenizer/byte_pair_encoding.h"

#include <gtest/gtest.h>

#include <map>
#include <random>
#include <set>

#include "test_util.h"

namespace mt {
namespace {

// The 256 single bytes as ids 0..255, then `extra` tokens.
std::vector<std::string> bytes_then(std::vector<std::string> extra) {
  std::vector<std::string> tokens;
  for (int b = 0; b < 256; ++b) tokens.push_back(std::string(1, static_cast<char>(b)));
  tokens.insert(tokens.end(), extra.begin(), extra.end());
  return tokens;
}

std::vector<int32_t> encode(const BytePairEncoding& bpe, std::string_view piece) {
  std::vector<int32_t> ids;
  bpe.encode_piece(piece, ids);
  return ids;
}

// tiktoken's byte_pair_merge as written there: scan for the adjacent pair
// whose concatenation has the lowest rank (the leftmost of equals), merge,
// repeat. The reference the heap of BytePairEncoding must equal.
std::vector<int32_t> reference_merge(const std::vector<std::string>& ranks, std::string_view piece) {
  std::map<std::string, int64_t> ranked;
  for (size_t r = 0; r < ranks.size(); ++r) ranked[ranks[r]] = static_cast<int64_t>(r);
  auto rank_of = [&](const std::string& bytes) -> int64_t {
    const auto it = ranked.find(bytes);
    return it == ranked.end() ? -1 : it->second;
  };
  std::vector<std::string> parts;
  for (char c : piece) parts.push_back(std::string(1, c));
  for (;;) {
    int64_t best = -1;
    size_t at = 0;
    for (size_t i = 0; i + 1 < parts.size(); ++i) {
      const int64_t r = rank_of(parts[i] + parts[i + 1]);
      if (r >= 0 && (best < 0 || r < best)) best = r, at = i;
    }
    if (best < 0) break;
    parts[at] += parts[at + 1];
    parts.erase(parts.begin() + static_cast<std::ptrdiff_t>(at) + 1);
  }
  std::vector<int32_t> ids;
  for (const std::string& p : parts) ids.push_back(static_cast<int32_t>(rank_of(p)));
  return ids;
}

TEST(BytePairEncoding, BytesToUnicodeIsGpt2sMap) {
  const auto& map = bytes_to_unicode();
  EXPECT_EQ(map['!'], "!");
  EXPECT_EQ(map['~'], "~");
  EXPECT_EQ(map[0xe9], "\xc3\xa9");   // é stands for itself
  EXPECT_EQ(map[0x00], "\xc4\x80");   // U+0100: the first byte that is not printable
  EXPECT_EQ(map[' '], "\xc4\xa0");    // U+0120 'Ġ'
  EXPECT_EQ(map['\n'], "\xc4\x8a");   // U+010A 'Ċ'
  EXPECT_EQ(map[0xad], "\xc5\x83");   // U+0143, the last
  std::string all, stand_ins;
  for (int b = 0; b < 256; ++b) all.push_back(static_cast<char>(b)), stand_ins += map[static_cast<size_t>(b)];
  EXPECT_EQ(unicode_to_bytes(stand_ins), all);
  EXPECT_EQ(unicode_to_bytes(" "), std::nullopt);         // a space is not a stand-in
  EXPECT_EQ(unicode_to_bytes("\xc5\x84"), std::nullopt);  // U+0144, past the map
  EXPECT_EQ(unicode_to_bytes("\xc4"), std::nullopt);      // not UTF-8
}

TEST(BytePairEncoding, MergesLowestPriorityFirstAndLeftmostOfEquals) {
  // 256 "ab", 257 "bc", 258 "abc" (ranks: tiktoken's merges).
  const std::vector<std::string> tokens = bytes_then({"ab", "bc", "abc", "aa"});
  const BytePairEncoding bpe(tokens, BytePairEncoding::merges_from_ranks(tokens), true, "test");
  EXPECT_EQ(encode(bpe, "abc"), (std::vector<int32_t>{258}));        // a whole token
  EXPECT_EQ(encode(bpe, "abcd"), (std::vector<int32_t>{258, 'd'}));  // ab first, then abc
  EXPECT_EQ(encode(bpe, "xbcx"), (std::vector<int32_t>{'x', 257, 'x'}));
  EXPECT_EQ(encode(bpe, "aaaaa"), (std::vector<int32_t>{259, 259, 'a'}));  // leftmost of equals first
  EXPECT_EQ(encode(bpe, "\xff"), (std::vector<int32_t>{0xff}));
}

TEST(BytePairEncoding, WholePieceFirstOnlyWhenAskedOrTheSame) {
  // "abc" is a token no merge makes: (a, b) is the only merge.
  const std::vector<std::string> tokens = bytes_then({"ab", "abc"});
  const std::vector<BytePairEncoding::Merge> merges = {{'a', 'b', 256, 0}};
  EXPECT_EQ(encode(BytePairEncoding(tokens, merges, true, "test"), "abc"), (std::vector<int32_t>{257}));
  EXPECT_EQ(encode(BytePairEncoding(tokens, merges, false, "test"), "abc"), (std::vector<int32_t>{256, 'c'}));
}

TEST(BytePairEncoding, EqualsTiktokensMergeOnRandomVocabularies) {
  // Random vocabularies over a 3-letter alphabet (so merges compete), and
  // random pieces up to 300 bytes: the heap equals the plain scan.
  std::mt19937 rng(7);
  for (int trial = 0; trial < 20; ++trial) {
    std::vector<std::string> tokens = bytes_then({});
    std::set<std::string> seen(tokens.begin(), tokens.end());
    std::vector<size_t> alphabet = {'a', 'b', 'c'};  // the ids of the tokens over it
    while (tokens.size() < 256 + 40) {
      const std::string t = tokens[alphabet[rng() % alphabet.size()]] + tokens[alphabet[rng() % alphabet.size()]];
      if (t.size() <= 8 && seen.insert(t).second) alphabet.push_back(tokens.size()), tokens.push_back(t);
    }
    const BytePairEncoding bpe(tokens, BytePairEncoding::merges_from_ranks(tokens), false, "test");
    for (int p = 0; p < 20; ++p) {
      std::string piece(1 + rng() % 300, 'a');
      for (char& c : piece) c = static_cast<char>('a' + rng() % 3);
      ASSERT_EQ(encode(bpe, piece), reference_merge(tokens, piece)) << "trial " << trial << " piece " << piece;
    }
  }
}

TEST(BytePairEncoding, BadVocabulariesAndMergesAreErrors) {
  std::vector<std::string> no_byte = bytes_then({});
  no_byte['q'] = "";
  test_util::expect_error([&] { BytePairEncoding(no_byte, {}, true, "SRC"); }, {"SRC", "byte 0x71 has no token"});
  test_util::expect_error([&] { BytePairEncoding(bytes_then({"ab", "ab"}), {}, true, "SRC"); },
                          {"SRC", "'ab' is both id 256 and id 257"});
  test_util::expect_error([&] { BytePairEncoding(bytes_then({"ab"}), {{'a', 'c', 256, 0}}, true, "SRC"); },
                          {"SRC", "'a' 'c' gives 'ab', not their concatenation"});
  test_util::expect_error(
      [&] { BytePairEncoding(bytes_then({"ab"}), {{'a', 'b', 256, 0}, {'a', 'b', 256, 1}}, true, "SRC"); },
      {"SRC", "'a' 'b' is merged twice"});
  test_util::expect_error([&] { BytePairEncoding(bytes_then({}), {{'a', 'b', 999, 0}}, true, "SRC"); },
                          {"SRC", "id with no token"});
}

}  // namespace
}  // namespace mt
