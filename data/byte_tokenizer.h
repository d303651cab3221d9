// The built-in byte tokenizer (docs/design.md section 5): ids 0..255 are the bytes
// of the text, 256 marks the end of a document. No merges, no vocabulary file,
// so any text round-trips exactly.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace mt::data {

struct ByteTokenizer {
  static constexpr int kVocabSize = 257;
  static constexpr int kEod = 256;

  // One id per byte; adds no end-of-document token (prepare_data does).
  static std::vector<int32_t> encode(std::string_view text);
  // Bytes back; kEod is dropped (it has no text). Any other id outside
  // [0, 256] throws, naming the id and its position.
  static std::string decode(std::span<const int32_t> ids);
};

}  // namespace mt::data
