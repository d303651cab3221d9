// libFuzzer target: the tokenizer files (tokenizer/tokenizer.h), each type's
// reader on arbitrary bytes. Input: one byte picking the type (byte % 10:
// GPT2BPETokenizer; TikTokenizer with --tiktoken-pattern cl100k_base,
// o200k_base, gpt2, v1, v2; SentencePieceTokenizer, GPTSentencePieceTokenizer,
// Llama2Tokenizer; HuggingFaceTokenizer), then the file's bytes (GPT-2's:
// encoder.json, a NUL byte, vocab.bpe). Megatron's JSON vocabulary (v1, v2)
// is read as 8 special tokens and 260 ranks, so a small file can build (an
// OpenAI .tiktoken cannot: its encoding fixes the ranks, 50256 and up). A
// tokenizer that builds encodes a short text and the input's last bytes,
// and decodes those ids and every id of its vocabulary (the first 4096). A
// file either builds a tokenizer that encodes and decodes, or fails with
// mt::Error naming it; anything else (another exception, a sanitizer
// report) is a bug.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/check.h"
#include "tokenizer/tokenizer.h"

namespace {

struct Kind {
  const char* type;
  const char* tiktoken_pattern;
};
constexpr Kind kKinds[] = {
    {"GPT2BPETokenizer", ""},          {"TikTokenizer", "cl100k_base"},
    {"TikTokenizer", "o200k_base"},    {"TikTokenizer", "gpt2"},
    {"TikTokenizer", "v1"},            {"TikTokenizer", "v2"},
    {"SentencePieceTokenizer", ""},    {"GPTSentencePieceTokenizer", ""},
    {"Llama2Tokenizer", ""},           {"HuggingFaceTokenizer", ""},
};
constexpr int32_t kMegatronSpecialTokens = 8;
constexpr int32_t kMegatronRanks = 260;

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const Kind& kind = kKinds[data[0] % std::size(kKinds)];
  const std::string_view file(reinterpret_cast<const char*>(data) + 1, size - 1);
  mt::TokenizerSpec spec;
  spec.options.type = kind.type;
  spec.options.tiktoken_pattern = kind.tiktoken_pattern;
  if (std::string_view(kind.tiktoken_pattern).starts_with('v')) {
    spec.options.tiktoken_num_special_tokens = kMegatronSpecialTokens;
    spec.options.vocab_size = kMegatronSpecialTokens + kMegatronRanks;
  }
  if (spec.options.type == "GPT2BPETokenizer") {
    const size_t nul = std::min(file.find('\0'), file.size());
    spec.options.vocab_file = "encoder.json";
    spec.options.merge_file = "vocab.bpe";
    spec.files["vocab"] = file.substr(0, nul);
    spec.files["merges"] = file.substr(std::min(nul + 1, file.size()));
  } else {
    spec.options.tokenizer_model = "tokenizer.model";
    spec.files["model"] = file;
  }
  std::unique_ptr<mt::Tokenizer> tokenizer;
  try {
    tokenizer = mt::make_tokenizer(spec);
  } catch (const mt::Error&) {
    return 0;  // a clear error: what a bad file must give
  }
  // Text with words, digits, spaces, a special token's text and non-ASCII,
  // then the input's last bytes (any bytes, invalid UTF-8 too).
  std::string text = "Hello world, 123  tokens!\n<|endoftext|> caf\xc3\xa9 \xe4\xb8\xad\xe6\x96\x87 <EOD></s>";
  text.append(file.substr(file.size() - std::min<size_t>(file.size(), 16)));
  try {
    const std::vector<int32_t> ids = tokenizer->encode(text);
    tokenizer->decode(ids);
  } catch (const mt::Error&) {
  }
  try {
    const std::vector<int32_t> gaps = tokenizer->gaps();
    std::vector<int32_t> every;
    for (int32_t id = 0; id < std::min(tokenizer->vocab_size(), 4096); ++id)
      if (!std::binary_search(gaps.begin(), gaps.end(), id)) every.push_back(id);
    tokenizer->decode(every);
    tokenizer->decode(std::vector<int32_t>{tokenizer->eod()});
  } catch (const mt::Error&) {
  }
  return 0;
}
