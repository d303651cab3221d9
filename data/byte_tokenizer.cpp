#include "data/byte_tokenizer.h"

#include "runtime/check.h"

namespace mt::data {

std::vector<int32_t> ByteTokenizer::encode(std::string_view text) {
  std::vector<int32_t> ids(text.size());
  for (size_t i = 0; i < text.size(); ++i) ids[i] = static_cast<unsigned char>(text[i]);
  return ids;
}

std::string ByteTokenizer::decode(std::span<const int32_t> ids) {
  std::string text;
  text.reserve(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    int32_t id = ids[i];
    if (id == kEod) continue;
    MT_CHECK(id >= 0 && id < 256, "byte tokenizer cannot decode id {} at position {} (valid: 0..{})",
             id, i, kEod);
    text.push_back(static_cast<char>(static_cast<unsigned char>(id)));
  }
  return text;
}

}  // namespace mt::data
