// Pre-tokenization by a Unicode regex (PCRE2, JIT compiled): the text is cut
// into the successive matches of the pattern, as tiktoken's find_iter and
// Hugging Face's Split do, before BPE encodes each piece on its own.
//
// The invalid-UTF-8 rule of the byte-level tokenizers (GPT2BPETokenizer,
// TikTokenizer, Hugging Face byte-level; docs/data.md): scanning the text
// from the start, a byte that does not begin a complete, valid UTF-8
// character (shortest form, no surrogates, at most U+10FFFF) is invalid: it
// alone is a piece, which BPE encodes as its single-byte token, and the scan
// goes on at the next byte. Each maximal run of valid text between invalid
// bytes is split by the pattern on its own (so `$` and lookaheads see the
// run's end). decode(encode(x)) == x for any bytes.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace mt {

// The length of the longest prefix of `text` that is valid UTF-8.
size_t valid_utf8_prefix(std::string_view text);

// tiktoken's split patterns, exactly as the npm `tiktoken` package's
// encoders/*.json pat_str, and Megatron's tiktoken_tokenizer.py v1 and v2.
extern const char* const kGpt2Pattern;
extern const char* const kCl100kPattern;
extern const char* const kO200kPattern;
extern const char* const kMegatronV1Pattern;
extern const char* const kMegatronV2Pattern;

class RegexSplitter {
 public:
  // What becomes of text no match covers (none, for the patterns above):
  // dropped, as tiktoken's find_iter and gpt-3-encoder's matchAll do, or kept
  // as pieces of its own, as Hugging Face's Split with "Isolated" does.
  enum class Gaps { kDrop, kKeep };

  // Compiles `pattern` with Rust's regex meanings (tiktoken's fancy_regex):
  // UTF and Unicode properties on, `$` only at the end, \s and \S Unicode's
  // White_Space. A pattern PCRE2 refuses is an error naming `source` and the
  // offset.
  RegexSplitter(const std::string& pattern, const std::string& source);
  ~RegexSplitter();
  RegexSplitter(RegexSplitter&&) noexcept;
  RegexSplitter& operator=(RegexSplitter&&) noexcept;

  // Appends the pieces of `text` (any bytes, by the invalid-UTF-8 rule) to
  // `pieces`, views into `text`. Safe to call from several threads at once.
  void split(std::string_view text, std::vector<std::string_view>& pieces, Gaps gaps = Gaps::kDrop) const;

 private:
  struct Code;
  // Splits valid UTF-8 by the pattern.
  void split_valid(std::string_view text, std::vector<std::string_view>& pieces, Gaps gaps) const;
  std::unique_ptr<Code> code_;
  std::string source_;
};

}  // namespace mt
