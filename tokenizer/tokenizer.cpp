#include "tokenizer/tokenizer.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "runtime/check.h"
#include "tokenizer/byte_tokenizer.h"
#include "tokenizer/null_tokenizer.h"
#include "tokenizer/tokenizer_types.h"

namespace mt {

namespace {

// A file a type reads: its role in TokenizerSpec::files and the flag that
// names it.
struct FileRole {
  const char* role;
  std::string TokenizerOptions::*path;
  const char* flag;
};
const FileRole kVocab{"vocab", &TokenizerOptions::vocab_file, "--vocab-file"};
const FileRole kMerges{"merges", &TokenizerOptions::merge_file, "--merge-file"};
const FileRole kModel{"model", &TokenizerOptions::tokenizer_model, "--tokenizer-model"};

struct TokenizerType {
  const char* name;
  std::vector<FileRole> files;
  std::unique_ptr<Tokenizer> (*make)(const TokenizerSpec&);
};

std::unique_ptr<Tokenizer> make_byte(const TokenizerSpec&) { return std::make_unique<ByteTokenizer>(); }
std::unique_ptr<Tokenizer> make_null(const TokenizerSpec& s) {
  return std::make_unique<NullTokenizer>(s.options.vocab_size);
}

const std::vector<TokenizerType>& types() {
  static const std::vector<TokenizerType> table = {
      {"ByteTokenizer", {}, make_byte},
      {"NullTokenizer", {}, make_null},
      {"GPT2BPETokenizer", {kVocab, kMerges}, make_gpt2_bpe_tokenizer},
      {"TikTokenizer", {kModel}, make_tiktoken_tokenizer},
      {"SentencePieceTokenizer", {kModel}, make_sentencepiece_tokenizer},
      {"GPTSentencePieceTokenizer", {kModel}, make_sentencepiece_tokenizer},
      {"Llama2Tokenizer", {kModel}, make_sentencepiece_tokenizer},
      {"HuggingFaceTokenizer", {kModel}, make_huggingface_tokenizer},
  };
  return table;
}

const TokenizerType& type_of(const std::string& name) {
  for (const TokenizerType& t : types())
    if (t.name == name) return t;
  MT_FAIL("--tokenizer-type {} is not one moetrain builds: {}", name, fmt::join(tokenizer_types(), ", "));
}

std::string read_whole_file(const std::string& path, const char* flag) {
  std::ifstream in(path, std::ios::binary);
  MT_CHECK(in.good(), "{} {}: cannot open: {}", flag, path, std::strerror(errno));
  std::ostringstream bytes;
  bytes << in.rdbuf();
  MT_CHECK(!in.bad(), "{} {}: cannot read: {}", flag, path, std::strerror(errno));
  return std::move(bytes).str();
}

}  // namespace

nlohmann::json::parser_callback_t json_depth_limit(const std::string& name) {
  return [name](int depth, nlohmann::json::parse_event_t event, nlohmann::json&) {
    constexpr int kMaxDepth = 100;
    if ((event == nlohmann::json::parse_event_t::object_start || event == nlohmann::json::parse_event_t::array_start) &&
        depth >= kMaxDepth)
      MT_FAIL("{}: JSON nested deeper than {} levels (no tokenizer file is)", name, kMaxDepth);
    return true;
  };
}

std::vector<std::string> tokenizer_types() {
  std::vector<std::string> names;
  for (const TokenizerType& t : types()) names.push_back(t.name);
  return names;
}

TokenizerSpec read_tokenizer_spec(const TokenizerOptions& options) {
  const TokenizerType& type = type_of(options.type);
  TokenizerSpec spec{options, {}};
  for (const FileRole& f : type.files) {
    const std::string& path = options.*f.path;
    MT_CHECK(!path.empty(), "--tokenizer-type {} needs {}", options.type, f.flag);
    MT_CHECK(std::filesystem::is_regular_file(path), "{} {}: no such file", f.flag, path);
    spec.files[f.role] = read_whole_file(path, f.flag);
  }
  return spec;
}

std::unique_ptr<Tokenizer> make_tokenizer(const TokenizerSpec& spec) {
  const TokenizerType& type = type_of(spec.options.type);
  for (const FileRole& f : type.files)
    MT_CHECK(spec.files.count(f.role), "the {} tokenizer has no {} file ({})", spec.options.type, f.role, f.flag);
  return type.make(spec);
}

nlohmann::json TokenizerSpec::options_json() const {
  nlohmann::json files_json = nlohmann::json::object();
  for (const TokenizerType& t : types())
    if (t.name == options.type)
      for (const FileRole& f : t.files)
        files_json[f.role] = {{"name", std::filesystem::path(options.*f.path).filename().string()},
                              {"bytes", files.count(f.role) ? files.at(f.role).size() : 0}};
  return {{"type", options.type},
          {"tiktoken_pattern", options.tiktoken_pattern},
          {"tiktoken_num_special_tokens", options.tiktoken_num_special_tokens},
          {"vocab_size", options.vocab_size},
          {"files", files_json}};
}

bool TokenizerSpec::same_tokenizer(const TokenizerSpec& other) const {
  const TokenizerOptions &a = options, &b = other.options;
  return a.type == b.type && a.tiktoken_pattern == b.tiktoken_pattern &&
         a.tiktoken_num_special_tokens == b.tiktoken_num_special_tokens && a.vocab_size == b.vocab_size &&
         files == other.files;
}

TokenizerOptions TokenizerSpec::options_from_json(const nlohmann::json& j) {
  TokenizerOptions o;
  o.type = j.at("type").get<std::string>();
  o.tiktoken_pattern = j.value("tiktoken_pattern", std::string());
  o.tiktoken_num_special_tokens = j.value("tiktoken_num_special_tokens", 1000);
  o.vocab_size = j.value("vocab_size", 0);
  // The files' names, for messages.
  const nlohmann::json files = j.value("files", nlohmann::json::object());
  for (const FileRole& f : {kVocab, kMerges, kModel})
    if (files.contains(f.role)) o.*f.path = files[f.role].value("name", std::string());
  return o;
}

}  // namespace mt
