// Tokenizers (docs/data.md): text to ids and back, by Megatron-LM's
// --tokenizer-type names. A TokenizerSpec is all that builds one: its type,
// its options and the bytes of its files. prepare-data and a fresh train
// read the files the flags name (read_tokenizer_spec); the checkpoint keeps
// the spec, so eval and generate rebuild the very tokenizer the model was
// trained with (make_tokenizer).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace mt {

// The tokenizer flags, Megatron-LM's names (launch/ fills them).
struct TokenizerOptions {
  std::string type = "ByteTokenizer";  // --tokenizer-type
  std::string vocab_file;              // --vocab-file: GPT-2's encoder.json
  std::string merge_file;              // --merge-file: GPT-2's vocab.bpe (merges.txt)
  std::string tokenizer_model;         // --tokenizer-model: .tiktoken, Megatron's tiktoken JSON, .model, tokenizer.json
  // --tiktoken-pattern: v1 or v2 (empty: v2, Megatron's default) for
  // Megatron's JSON vocabulary; cl100k_base, o200k_base or gpt2 (required)
  // for OpenAI's .tiktoken ranks (their own split and special tokens).
  std::string tiktoken_pattern;
  int tiktoken_num_special_tokens = 1000;  // --tiktoken-num-special-tokens (Megatron's JSON vocabulary)
  int vocab_size = 0;                      // --vocab-size: NullTokenizer's size; 0: the tokenizer's own
};

// What builds a tokenizer: the options (the file names kept only to name
// them in messages) and each file's bytes by its role ("vocab", "merges",
// "model").
struct TokenizerSpec {
  TokenizerOptions options;
  std::map<std::string, std::string> files;

  // The options, and each file's name and size (not its bytes), as the
  // checkpoint's `tokenizer` attribute holds them.
  nlohmann::json options_json() const;
  static TokenizerOptions options_from_json(const nlohmann::json& j);
  // Whether both build the same tokenizer: the same type, options and file
  // bytes (the files' names may differ).
  bool same_tokenizer(const TokenizerSpec& other) const;
};

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  // The ids of the text, as Megatron's tokenize() gives them (with the BOS
  // a type adds there); no end of document.
  virtual std::vector<int32_t> encode(std::string_view text) const = 0;
  // The text of the ids: bytes, which a cut through a multi-byte character
  // leaves as invalid UTF-8 (generation prints whole characters only,
  // Utf8Stream). An id outside [0, vocab_size()) throws, naming it and its
  // position.
  virtual std::string decode(std::span<const int32_t> ids) const = 0;
  // Ids are [0, vocab_size()): the size before the model pads it.
  virtual int32_t vocab_size() const = 0;
  // The end-of-document id prepare-data appends (--append-eod).
  virtual int32_t eod() const = 0;
  // The ids below vocab_size() that are no token (OpenAI's vocabularies skip
  // some), which decode refuses and generation never picks.
  virtual std::vector<int32_t> gaps() const { return {}; }
};

// The files the options name, read; each missing or unreadable file is an
// error naming its flag and path, and a type that needs a file it was not
// given names that flag.
TokenizerSpec read_tokenizer_spec(const TokenizerOptions& options);

// The tokenizer of a spec; a file it cannot parse is an error naming the
// file (and the line or entry where it can).
std::unique_ptr<Tokenizer> make_tokenizer(const TokenizerSpec& spec);

// Megatron's --tokenizer-type names moetrain builds, for --help and errors.
std::vector<std::string> tokenizer_types();

}  // namespace mt
