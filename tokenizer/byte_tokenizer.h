// The built-in byte tokenizer (docs/data.md), moetrain's default: ids 0..255
// are the bytes of the text, 256 marks the end of a document. No merges, no
// vocabulary file, so any text round-trips exactly.
#pragma once

#include "tokenizer/tokenizer.h"

namespace mt {

class ByteTokenizer : public Tokenizer {
 public:
  static constexpr int kVocabSize = 257;
  static constexpr int kEod = 256;

  // One id per byte.
  std::vector<int32_t> encode(std::string_view text) const override;
  // Bytes back; kEod is dropped (it has no text).
  std::string decode(std::span<const int32_t> ids) const override;
  int32_t vocab_size() const override { return kVocabSize; }
  int32_t eod() const override { return kEod; }
};

}  // namespace mt
