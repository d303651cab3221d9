#include "tokenizer/byte_tokenizer.h"

#include <gtest/gtest.h>

#include "test_util.h"

namespace mt {
namespace {

TEST(ByteTokenizer, RoundTripsEveryByte) {
  std::string text;
  for (int b = 0; b < 256; ++b) text.push_back(static_cast<char>(b));
  text += "h\xc3\xa9llo, w\xc3\xb6rld";  // UTF-8 stays as its bytes
  std::vector<int32_t> ids = ByteTokenizer().encode(text);
  ASSERT_EQ(ids.size(), text.size());
  for (int b = 0; b < 256; ++b) EXPECT_EQ(ids[b], b);
  EXPECT_EQ(ids[256 + 1], 0xc3);
  EXPECT_EQ(ByteTokenizer().decode(ids), text);
}

TEST(ByteTokenizer, EodIsDroppedAndBadIdsThrow) {
  EXPECT_EQ(ByteTokenizer::kVocabSize, 257);
  EXPECT_EQ(ByteTokenizer::kEod, 256);
  EXPECT_TRUE(ByteTokenizer().encode("").empty());
  std::vector<int32_t> ids = {'a', ByteTokenizer::kEod, 'b'};
  EXPECT_EQ(ByteTokenizer().decode(ids), "ab");
  std::vector<int32_t> bad = {'a', 300};
  test_util::expect_error([&] { ByteTokenizer().decode(bad); }, {"300", "position 1"});
  std::vector<int32_t> negative = {-1};
  test_util::expect_error([&] { ByteTokenizer().decode(negative); }, {"-1"});
}

}  // namespace
}  // namespace mt
