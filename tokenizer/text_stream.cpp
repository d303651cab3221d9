#include "tokenizer/text_stream.h"

namespace mt {

namespace {

// Where the text stops being final: before a UTF-8 character whose bytes
// have not all come, or a replacement character (U+FFFD), which a
// byte-fallback decoder gives for a character's first bytes alone.
size_t final_length(const std::string& text) {
  size_t end = text.size();
  // Back over the continuation bytes to the last lead byte.
  size_t lead = end;
  while (lead > 0 && (uint8_t(text[lead - 1]) & 0xC0) == 0x80 && end - lead < 3) --lead;
  if (lead > 0) {
    const uint8_t b = uint8_t(text[lead - 1]);
    const size_t need = b >= 0xF0 ? 4 : b >= 0xE0 ? 3 : b >= 0xC0 ? 2 : 1;
    if (need > 1 && end - (lead - 1) < need) end = lead - 1;
  }
  static const std::string kReplacement = "\xEF\xBF\xBD";
  while (end >= 3 && text.compare(end - 3, 3, kReplacement) == 0) end -= 3;
  return end;
}

}  // namespace

std::string decode_continuation(const Tokenizer& tokenizer, std::span<const int32_t> prefix,
                                std::span<const int32_t> ids) {
  std::vector<int32_t> all(prefix.begin(), prefix.end());
  all.insert(all.end(), ids.begin(), ids.end());
  const std::string before = tokenizer.decode(prefix), whole = tokenizer.decode(all);
  if (whole.compare(0, before.size(), before) == 0) return whole.substr(before.size());
  return tokenizer.decode(ids);
}

TextStream::TextStream(const Tokenizer& tokenizer, std::vector<int32_t> prefix)
    : tokenizer_(tokenizer), prefix_(std::move(prefix)) {}

std::string TextStream::push(int32_t id) {
  ids_.push_back(id);
  const std::string text = decode_continuation(tokenizer_, prefix_, ids_);
  const size_t end = final_length(text);
  if (end <= printed_.size() || text.compare(0, printed_.size(), printed_) != 0) return "";
  std::string added = text.substr(printed_.size(), end - printed_.size());
  printed_ += added;
  return added;
}

std::string TextStream::finish() {
  const std::string text = decode_continuation(tokenizer_, prefix_, ids_);
  if (text.compare(0, printed_.size(), printed_) != 0) return "";
  std::string rest = text.substr(printed_.size());
  printed_ = text;
  return rest;
}

}  // namespace mt
