// Megatron's NullTokenizer (docs/data.md): the text is the ids themselves,
// written in decimal and separated by whitespace; for stores of ids made
// elsewhere and for benchmarks. --vocab-size ids, the last the end of a
// document (megatron/core/tokenizers/text/libraries/null_tokenizer.py).
#pragma once

#include "tokenizer/tokenizer.h"

namespace mt {

class NullTokenizer : public Tokenizer {
 public:
  explicit NullTokenizer(int32_t vocab_size);
  // Each whitespace-separated decimal id; anything else, or an id outside
  // the vocabulary, throws naming it.
  std::vector<int32_t> encode(std::string_view text) const override;
  // The ids in decimal, separated by single spaces.
  std::string decode(std::span<const int32_t> ids) const override;
  int32_t vocab_size() const override { return vocab_size_; }
  int32_t eod() const override { return vocab_size_ - 1; }

 private:
  int32_t vocab_size_;
};

}  // namespace mt
