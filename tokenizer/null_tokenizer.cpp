#include "tokenizer/null_tokenizer.h"

#include <fmt/format.h>

#include <charconv>

#include "runtime/check.h"

namespace mt {

NullTokenizer::NullTokenizer(int32_t vocab_size) : vocab_size_(vocab_size) {
  MT_CHECK(vocab_size >= 1, "--tokenizer-type NullTokenizer needs --vocab-size, the number of ids (got {})",
           vocab_size);
}

std::vector<int32_t> NullTokenizer::encode(std::string_view text) const {
  std::vector<int32_t> ids;
  size_t at = 0;
  auto space = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; };
  while (at < text.size()) {
    while (at < text.size() && space(text[at])) ++at;
    size_t end = at;
    while (end < text.size() && !space(text[end])) ++end;
    if (end == at) break;
    int32_t id = -1;
    const auto [stop, error] = std::from_chars(text.data() + at, text.data() + end, id);
    MT_CHECK(error == std::errc() && stop == text.data() + end && id >= 0 && id < vocab_size_,
             "NullTokenizer: '{}' at byte {} is not an id below --vocab-size {}", text.substr(at, end - at), at,
             vocab_size_);
    ids.push_back(id);
    at = end;
  }
  return ids;
}

std::string NullTokenizer::decode(std::span<const int32_t> ids) const {
  std::string text;
  for (size_t i = 0; i < ids.size(); ++i) {
    MT_CHECK(ids[i] >= 0 && ids[i] < vocab_size_, "token id {} at position {} is outside the vocabulary of {}",
             ids[i], i, vocab_size_);
    if (i) text += ' ';
    text += fmt::format("{}", ids[i]);
  }
  return text;
}

}  // namespace mt
