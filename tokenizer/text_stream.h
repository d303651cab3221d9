// Text of generated ids as it is produced (`moetrain generate`, train's
// samples): only whole UTF-8 characters, and only text that later ids
// cannot change, so a character split over two tokens (a byte-level BPE
// or byte-fallback token holds part of one) is printed once, whole.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace mt {

// The text `ids` add after `prefix`: decode(prefix + ids) past
// decode(prefix), as a tokenizer's decode of a continuation alone may
// differ at its start (SentencePiece drops a leading space there).
std::string decode_continuation(const Tokenizer& tokenizer, std::span<const int32_t> prefix,
                                std::span<const int32_t> ids);

class TextStream {
 public:
  TextStream(const Tokenizer& tokenizer, std::vector<int32_t> prefix);
  // The text that is final now that `id` came; may be empty.
  std::string push(int32_t id);
  // What is left to print at the end.
  std::string finish();

 private:
  const Tokenizer& tokenizer_;
  std::vector<int32_t> prefix_, ids_;
  std::string printed_;
};

}  // namespace mt
