#include "tokenizer/text_stream.h"

#include <gtest/gtest.h>

#include "tokenizer/byte_tokenizer.h"

namespace mt {
namespace {

std::vector<int32_t> bytes_of(const std::string& s) { return ByteTokenizer().encode(s); }

// A character split over tokens is printed once, whole, when its last byte
// comes; the pieces add up to the continuation's text.
TEST(TextStream, PrintsWholeCharactersOnly) {
  const ByteTokenizer bytes;
  const std::string text = "a\xC3\xA9 \xE2\x82\xAC\xF0\x9F\x98\x80!";  // a, é, space, €, 😀, !
  TextStream stream(bytes, bytes_of("prompt "));
  std::vector<std::string> printed;
  for (int32_t id : bytes_of(text)) printed.push_back(stream.push(id));
  printed.push_back(stream.finish());
  const std::vector<std::string> expected = {"a", "", "\xC3\xA9", " ", "", "", "\xE2\x82\xAC", "", "", "",
                                             "\xF0\x9F\x98\x80", "!", ""};
  EXPECT_EQ(printed, expected);
}

// A continuation that ends inside a character prints its bytes at the end.
TEST(TextStream, FinishPrintsWhatIsLeft) {
  const ByteTokenizer bytes;
  TextStream stream(bytes, {});
  EXPECT_EQ(stream.push(0xE2), "");
  EXPECT_EQ(stream.push(0x82), "");
  EXPECT_EQ(stream.finish(), "\xE2\x82");
}

TEST(TextStream, ContinuationIsTheTextAfterThePrefix) {
  const ByteTokenizer bytes;
  EXPECT_EQ(decode_continuation(bytes, bytes_of("The "), bytes_of("cat")), "cat");
  EXPECT_EQ(decode_continuation(bytes, {}, bytes_of("x\xC3")), "x\xC3");
}

}  // namespace
}  // namespace mt
