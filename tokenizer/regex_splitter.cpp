#include "tokenizer/regex_splitter.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <utf8proc.h>

#include "runtime/check.h"

namespace mt {

const char* const kGpt2Pattern = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
const char* const kCl100kPattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|)"
    R"(\s*[\r\n]+|\s+(?!\S)|\s+)";
const char* const kO200kPattern =
    R"([^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|)"
    R"([^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|)"
    R"(\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
const char* const kMegatronV1Pattern =
    R"([^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+)";
const char* const kMegatronV2Pattern =
    R"([^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|)"
    R"([^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|)"
    R"(\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

size_t valid_utf8_prefix(std::string_view text) {
  const auto* p = reinterpret_cast<const utf8proc_uint8_t*>(text.data());
  size_t at = 0;
  while (at < text.size()) {
    if (p[at] < 0x80) {
      ++at;
      continue;
    }
    // utf8proc_iterate refuses truncated and overlong sequences, surrogates
    // and code points above U+10FFFF.
    utf8proc_int32_t cp = 0;
    const utf8proc_ssize_t n = utf8proc_iterate(p + at, static_cast<utf8proc_ssize_t>(text.size() - at), &cp);
    if (n <= 0) break;
    at += static_cast<size_t>(n);
  }
  return at;
}

namespace {

// Rust's regex (tiktoken's fancy_regex) means Unicode's White_Space by \s;
// PCRE2's \s also takes U+180E. Each \s and \S becomes the property itself,
// in and out of character classes; every other escape stays as it is.
std::string with_rust_whitespace(const std::string& pattern) {
  std::string out;
  for (size_t i = 0; i < pattern.size(); ++i) {
    if (pattern[i] != '\\' || i + 1 == pattern.size()) {
      out += pattern[i];
      continue;
    }
    const char escaped = pattern[++i];
    if (escaped == 's')
      out += "\\p{White_Space}";
    else if (escaped == 'S')
      out += "\\P{White_Space}";
    else
      out += {'\\', escaped};
  }
  return out;
}

// What a thread matches with: the match data (only the whole match is read)
// and a JIT stack larger than the default 32 KiB, for long pieces.
struct MatchScratch {
  pcre2_match_data* data = pcre2_match_data_create(1, nullptr);
  pcre2_match_context* context = pcre2_match_context_create(nullptr);
  pcre2_jit_stack* stack = pcre2_jit_stack_create(32 * 1024, 16 * 1024 * 1024, nullptr);
  MatchScratch() {
    MT_CHECK(data && context && stack, "out of memory for PCRE2's match data");
    pcre2_jit_stack_assign(context, nullptr, stack);
  }
  ~MatchScratch() {
    pcre2_jit_stack_free(stack);
    pcre2_match_context_free(context);
    pcre2_match_data_free(data);
  }
};

std::string pcre2_message(int code) {
  PCRE2_UCHAR buf[256];
  pcre2_get_error_message(code, buf, sizeof buf);
  return reinterpret_cast<const char*>(buf);
}

}  // namespace

struct RegexSplitter::Code {
  pcre2_code* code = nullptr;
  ~Code() { pcre2_code_free(code); }
};

RegexSplitter::RegexSplitter(const std::string& pattern, const std::string& source)
    : code_(std::make_unique<Code>()), source_(source) {
  const std::string compiled = with_rust_whitespace(pattern);
  int error = 0;
  PCRE2_SIZE offset = 0;
  code_->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(compiled.data()), compiled.size(),
                              PCRE2_UTF | PCRE2_UCP | PCRE2_DOLLAR_ENDONLY, &error, &offset, nullptr);
  MT_CHECK(code_->code != nullptr, "{}: the split pattern '{}' does not compile (PCRE2, at offset {} of '{}'): {}",
           source, pattern, offset, compiled, pcre2_message(error));
  error = pcre2_jit_compile(code_->code, PCRE2_JIT_COMPLETE);
  MT_CHECK(error == 0, "{}: the split pattern '{}' does not JIT-compile: {}", source, pattern, pcre2_message(error));
}

RegexSplitter::~RegexSplitter() = default;
RegexSplitter::RegexSplitter(RegexSplitter&&) noexcept = default;
RegexSplitter& RegexSplitter::operator=(RegexSplitter&&) noexcept = default;

void RegexSplitter::split(std::string_view text, std::vector<std::string_view>& pieces, Gaps gaps) const {
  while (!text.empty()) {
    const size_t valid = valid_utf8_prefix(text);
    split_valid(text.substr(0, valid), pieces, gaps);
    if (valid == text.size()) break;
    pieces.push_back(text.substr(valid, 1));  // an invalid byte, a piece of its own
    text.remove_prefix(valid + 1);
  }
}

void RegexSplitter::split_valid(std::string_view text, std::vector<std::string_view>& pieces, Gaps gaps) const {
  thread_local MatchScratch scratch;
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t at = 0;  // where the next search starts: the end of the last match
  while (at < text.size()) {
    // The text was checked (valid_utf8_prefix); pieces are never empty (an
    // empty match is passed over, as it would add no token).
    const int rc = pcre2_match(code_->code, subject, text.size(), at, PCRE2_NO_UTF_CHECK | PCRE2_NOTEMPTY,
                               scratch.data, scratch.context);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    MT_CHECK(rc >= 0, "{}: the split pattern failed on a piece of text at byte {}: {}", source_, at,
             pcre2_message(rc));
    const PCRE2_SIZE* match = pcre2_get_ovector_pointer(scratch.data);
    if (gaps == Gaps::kKeep && match[0] > at) pieces.push_back(text.substr(at, match[0] - at));
    pieces.push_back(text.substr(match[0], match[1] - match[0]));
    at = match[1];
  }
  if (gaps == Gaps::kKeep && at < text.size()) pieces.push_back(text.substr(at));
}

}  // namespace mt
