#include "tokenizer/byte_tokenizer.h"

#include "runtime/check.h"

namespace mt {

std::vector<int32_t> ByteTokenizer::encode(std::string_view text) const {
  std::vector<int32_t> ids(text.size());
  for (size_t i = 0; i < text.size(); ++i) ids[i] = static_cast<unsigned char>(text[i]);
  return ids;
}

std::string ByteTokenizer::decode(std::span<const int32_t> ids) const {
  std::string text;
  text.reserve(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    const int32_t id = ids[i];
    MT_CHECK(id >= 0 && id <= kEod, "token id {} at position {} is not a byte or end-of-document id (0..{})", id,
             i, kEod);
    if (id != kEod) text.push_back(static_cast<char>(id));
  }
  return text;
}

}  // namespace mt
