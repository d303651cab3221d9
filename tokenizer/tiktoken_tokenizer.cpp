// TikTokenizer (docs/data.md): tiktoken's byte-level BPE, where a merge's
// priority is the rank of the token it makes. --tokenizer-model is one of two
// formats, told apart by content: a file whose first non-blank byte is '['
// is Megatron's JSON vocabulary, any other OpenAI's .tiktoken ranks.
//
// OpenAI's .tiktoken ("base64-token rank" lines) with --tiktoken-pattern
// cl100k_base, o200k_base or gpt2: that encoding's split pattern and special
// tokens (as the npm tiktoken package's encoders/*.json), so the ids are
// OpenAI's. Text is ordinary text (encode_ordinary: "<|endoftext|>" in a
// document is those characters); decode renders a special id as its string.
// vocab_size is the largest id + 1 (OpenAI's n_vocab); eod is <|endoftext|>.
//
// Megatron's JSON vocabulary (a list of {rank, token_bytes, token_str}, rank
// i at index i, ranks 0..255 the bytes 0..255) as Megatron's
// tiktoken_tokenizer.py defines it: --tiktoken-num-special-tokens N ids come
// first, Megatron's <unk> <s> </s> <mask> <pad> <cls> <sep> then
// <SPECIAL_7>...<SPECIAL_{N-1}>, and rank r is id r + N; the vocabulary is
// --vocab-size ids (Megatron's default 131072 when it is 0), so the first
// vocab_size - N ranks are kept and a file with fewer is an error; the split
// pattern is --tiktoken-pattern v1 or v2 (Megatron's default v2 when empty);
// eod is </s> (id 2); special-token strings in the text become their ids
// (Megatron encodes with allowed_special="all").
#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <nlohmann/json.hpp>
#include <unordered_map>

#include "runtime/check.h"
#include "tokenizer/byte_pair_encoding.h"
#include "tokenizer/regex_splitter.h"
#include "tokenizer/tokenizer_types.h"

namespace mt {

namespace {

// OpenAI's encodings, from the npm tiktoken package's encoders/*.json.
struct OpenAIEncoding {
  const char* name;
  const char* pattern;
  int32_t ranks;  // the number of ranks in its .tiktoken file
  std::vector<std::pair<std::string, int32_t>> special_tokens;
};
const std::vector<OpenAIEncoding>& openai_encodings() {
  static const std::vector<OpenAIEncoding> table = {
      {"cl100k_base",
       kCl100kPattern,
       100256,
       {{"<|endoftext|>", 100257},
        {"<|fim_prefix|>", 100258},
        {"<|fim_middle|>", 100259},
        {"<|fim_suffix|>", 100260},
        {"<|endofprompt|>", 100276}}},
      {"o200k_base", kO200kPattern, 199998, {{"<|endoftext|>", 199999}, {"<|endofprompt|>", 200018}}},
      {"gpt2", kGpt2Pattern, 50256, {{"<|endoftext|>", 50256}}},
  };
  return table;
}

// Special tokens by their text, looked up by string_view.
struct TextHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>()(s); }
};
using SpecialIds = std::unordered_map<std::string, int32_t, TextHash, std::equal_to<>>;

// Megatron's tiktoken_tokenizer.py.
constexpr int32_t kMegatronDefaultVocabSize = 131072;
const char* const kMegatronSpecialTokens[] = {"<unk>", "<s>", "</s>", "<mask>", "<pad>", "<cls>", "<sep>"};
constexpr int32_t kMegatronEod = 2;  // </s>

// Standard base64 with '=' padding; nullopt for anything else.
std::optional<std::string> decode_base64(std::string_view text) {
  auto value = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  if (text.empty() || text.size() % 4 != 0) return std::nullopt;
  const size_t padding = text.ends_with("==") ? 2 : text.ends_with('=') ? 1 : 0;
  std::string bytes;
  uint32_t bits = 0;
  int nbits = 0;
  for (size_t i = 0; i < text.size() - padding; ++i) {
    const int v = value(text[i]);
    if (v < 0) return std::nullopt;
    bits = (bits << 6) | static_cast<uint32_t>(v);
    nbits += 6;
    if (nbits >= 8) {
      nbits -= 8;
      bytes.push_back(static_cast<char>((bits >> nbits) & 0xff));
    }
  }
  // The bits the padding leaves over must be zero (the one encoding of these bytes).
  if ((bits & ((1u << nbits) - 1)) != 0) return std::nullopt;
  return bytes;
}

// A .tiktoken file read: each rank's bytes, ranks 0..n-1 with none missing.
std::vector<std::string> read_tiktoken_ranks(const std::string& text, const std::string& name) {
  MT_CHECK(!text.empty(), "{}: empty file", name);
  MT_CHECK(text.ends_with('\n'), "{}: the last line has no newline (truncated?)", name);
  std::vector<std::string> tokens;
  std::vector<size_t> line_of;  // by rank: the line that gives it, 0 for none yet
  // n lines can give ranks 0..n-1 only: a rank of n or more leaves one of
  // those missing (found below), and is not stored, so that a short file
  // never asks for a table of 2^30 ranks.
  const size_t lines = static_cast<size_t>(std::count(text.begin(), text.end(), '\n'));
  // By the base64 text: decode_base64 takes one spelling of each byte string.
  std::unordered_map<std::string_view, size_t> line_of_token;
  size_t at = 0;
  for (size_t line = 1; at < text.size(); ++line) {
    const size_t end = text.find('\n', at);
    const std::string_view row(text.data() + at, end - at);
    at = end + 1;
    const size_t space = row.find(' ');
    MT_CHECK(space != std::string_view::npos, "{}: line {}: '{}' is not 'base64-token rank'", name, line, row);
    const std::optional<std::string> token = decode_base64(row.substr(0, space));
    MT_CHECK(token.has_value(), "{}: line {}: '{}' is not base64", name, line, row.substr(0, space));
    const std::string_view rank_text = row.substr(space + 1);
    int64_t rank = -1;
    const auto [stop, error] = std::from_chars(rank_text.data(), rank_text.data() + rank_text.size(), rank);
    MT_CHECK(error == std::errc() && stop == rank_text.data() + rank_text.size() && rank >= 0 && rank < (1 << 30),
             "{}: line {}: the rank '{}' is not a whole number in [0, 2^30)", name, line, rank_text);
    const auto [it, fresh] = line_of_token.emplace(row.substr(0, space), line);
    MT_CHECK(fresh, "{}: line {}: the token '{}' is on line {} too", name, line, row.substr(0, space), it->second);
    if (static_cast<size_t>(rank) >= lines) {
      tokens.resize(lines);
      line_of.resize(lines, 0);
      continue;
    }
    if (static_cast<size_t>(rank) >= tokens.size()) {
      tokens.resize(static_cast<size_t>(rank) + 1);
      line_of.resize(static_cast<size_t>(rank) + 1, 0);
    }
    MT_CHECK(line_of[static_cast<size_t>(rank)] == 0, "{}: line {}: rank {} is on line {} too", name, line, rank,
             line_of[static_cast<size_t>(rank)]);
    tokens[static_cast<size_t>(rank)] = *token;
    line_of[static_cast<size_t>(rank)] = line;
  }
  for (size_t rank = 0; rank < tokens.size(); ++rank)
    MT_CHECK(line_of[rank] != 0, "{}: no line has rank {} (ranks must be 0..{} with none missing)", name, rank,
             tokens.size() - 1);
  return tokens;
}

// Megatron's JSON vocabulary read: the first `keep` ranks' bytes.
std::vector<std::string> read_megatron_vocabulary(const std::string& text, const std::string& name, int32_t keep,
                                                  const std::string& sizes) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text, json_depth_limit(name));
  } catch (const nlohmann::json::parse_error& e) {
    MT_FAIL("{}: not JSON (truncated?): {}", name, e.what());
  }
  MT_CHECK(j.is_array(), "{}: not a JSON list of {{rank, token_bytes, token_str}} (Megatron's tiktoken vocabulary)",
           name);
  MT_CHECK(j.size() >= static_cast<size_t>(keep), "{}: {} tokens, fewer than the {} it needs ({})", name, j.size(),
           keep, sizes);
  std::vector<std::string> tokens(static_cast<size_t>(keep));
  std::unordered_map<std::string, int32_t> rank_of;
  for (int32_t i = 0; i < keep; ++i) {
    const nlohmann::json& e = j[static_cast<size_t>(i)];
    MT_CHECK(e.is_object() && e.size() == 3 && e.contains("rank") && e.contains("token_bytes") &&
                 e.contains("token_str"),
             "{}: entry {}: not an object of exactly rank, token_bytes and token_str", name, i);
    MT_CHECK(e["rank"].is_number_integer() && e["rank"].get<int64_t>() == i, "{}: entry {}: rank {}, not {}", name,
             i, e["rank"].dump(), i);
    const std::optional<std::string> token =
        e["token_bytes"].is_string() ? decode_base64(e["token_bytes"].get<std::string>()) : std::nullopt;
    MT_CHECK(token.has_value(), "{}: entry {}: token_bytes {} is not base64", name, i, e["token_bytes"].dump());
    MT_CHECK(i >= 256 || *token == std::string(1, static_cast<char>(i)),
             "{}: entry {}: ranks 0..255 must be the bytes 0..255 in order (Megatron's format)", name, i);
    const auto [it, fresh] = rank_of.emplace(*token, i);
    MT_CHECK(fresh, "{}: entry {}: the same token_bytes as entry {}", name, i, it->second);
    tokens[static_cast<size_t>(i)] = *token;
  }
  return tokens;
}

class TikTokenizer : public Tokenizer {
 public:
  // ids: rank + id_offset, or a special token's id; specials_in_text: special
  // strings in the text are their ids (else ordinary text).
  TikTokenizer(std::vector<std::string> ranks, const char* pattern, int32_t id_offset,
               SpecialIds specials, bool specials_in_text, int32_t vocab_size,
               int32_t eod, const std::string& source)
      : bpe_(ranked(std::move(ranks), source)),
        splitter_(pattern, source),
        id_offset_(id_offset),
        special_ids_(std::move(specials)),
        specials_in_text_(specials_in_text),
        vocab_size_(vocab_size),
        eod_(eod) {
    for (const auto& [text, id] : special_ids_) {
      special_texts_[id] = text;
      longest_special_ = std::max(longest_special_, text.size());
    }
  }

  std::vector<int32_t> encode(std::string_view text) const override {
    std::vector<int32_t> ids;
    ids.reserve(text.size() / 3);
    std::vector<std::string_view> pieces;
    // Megatron's special tokens are "<...>" with one '>', at their end: a
    // special token starting at a '<' ends at the next '>'. That '>' is found
    // once for all the '<' before it, and only text as short as a special
    // token is looked up, so no text takes quadratic time.
    size_t at = 0;     // the start of the text not yet encoded
    size_t close = 0;  // the first '>' after `open`
    for (size_t open = 0; specials_in_text_ && (open = text.find('<', open)) != std::string_view::npos; ++open) {
      if (close <= open) close = text.find('>', open);
      if (close == std::string_view::npos) break;
      if (close + 1 - open > longest_special_) continue;
      const auto special = special_ids_.find(text.substr(open, close + 1 - open));
      if (special == special_ids_.end()) continue;
      encode_ordinary(text.substr(at, open - at), pieces, ids);
      ids.push_back(special->second);
      at = close + 1;
      open = close;
    }
    encode_ordinary(text.substr(at), pieces, ids);
    return ids;
  }

  std::string decode(std::span<const int32_t> ids) const override {
    std::string text;
    for (size_t i = 0; i < ids.size(); ++i) {
      const int32_t id = ids[i];
      MT_CHECK(id >= 0 && id < vocab_size_, "token id {} at position {} is outside the vocabulary of {}", id, i,
               vocab_size_);
      const int32_t rank = id - id_offset_;
      if (rank >= 0 && rank < bpe_.size() && !bpe_.token(rank).empty()) {
        text += bpe_.token(rank);
        continue;
      }
      const auto special = special_texts_.find(id);
      MT_CHECK(special != special_texts_.end(), "token id {} at position {} is no token (a gap in the vocabulary)",
               id, i);
      text += special->second;
    }
    return text;
  }

  int32_t vocab_size() const override { return vocab_size_; }
  int32_t eod() const override { return eod_; }
  std::vector<int32_t> gaps() const override {
    std::vector<int32_t> ids;
    for (int32_t id = 0; id < vocab_size_; ++id) {
      const int32_t rank = id - id_offset_;
      const bool token = rank >= 0 && rank < bpe_.size() && !bpe_.token(rank).empty();
      if (!token && !special_texts_.count(id)) ids.push_back(id);
    }
    return ids;
  }

 private:
  // tiktoken's BPE: a merge's priority is the rank it makes, and a piece that
  // is a token is that token.
  static BytePairEncoding ranked(std::vector<std::string> ranks, const std::string& source) {
    const std::vector<BytePairEncoding::Merge> merges = BytePairEncoding::merges_from_ranks(ranks);
    return BytePairEncoding(std::move(ranks), merges, /*whole_piece_first=*/true, source);
  }

  void encode_ordinary(std::string_view text, std::vector<std::string_view>& pieces, std::vector<int32_t>& ids) const {
    pieces.clear();
    splitter_.split(text, pieces);
    const size_t first = ids.size();
    for (std::string_view piece : pieces) bpe_.encode_piece(piece, ids);
    if (id_offset_ != 0)
      for (size_t i = first; i < ids.size(); ++i) ids[i] += id_offset_;
  }

  BytePairEncoding bpe_;
  RegexSplitter splitter_;
  int32_t id_offset_;
  SpecialIds special_ids_;
  std::unordered_map<int32_t, std::string> special_texts_;
  size_t longest_special_ = 0;
  bool specials_in_text_;
  int32_t vocab_size_;
  int32_t eod_;
};

std::unique_ptr<Tokenizer> make_openai(const TokenizerSpec& spec, const std::string& name) {
  const std::string& pattern = spec.options.tiktoken_pattern;
  const OpenAIEncoding* encoding = nullptr;
  for (const OpenAIEncoding& e : openai_encodings())
    if (pattern == e.name) encoding = &e;
  MT_CHECK(encoding != nullptr,
           "{} is OpenAI's .tiktoken ranks: --tiktoken-pattern must name its encoding, cl100k_base, o200k_base or "
           "gpt2 (its split pattern and special tokens), not '{}'",
           name, pattern);
  std::vector<std::string> ranks = read_tiktoken_ranks(spec.files.at("model"), name);
  MT_CHECK(static_cast<int32_t>(ranks.size()) == encoding->ranks,
           "{}: {} ranks, but OpenAI's {} has {} (--tiktoken-pattern {} is another vocabulary's)", name, ranks.size(),
           encoding->name, encoding->ranks, encoding->name);
  SpecialIds specials;
  int32_t vocab_size = static_cast<int32_t>(ranks.size());
  for (const auto& [text, id] : encoding->special_tokens) {
    specials.emplace(text, id);
    vocab_size = std::max(vocab_size, id + 1);
  }
  const int32_t eod = specials.at("<|endoftext|>");
  return std::make_unique<TikTokenizer>(std::move(ranks), encoding->pattern, 0, std::move(specials),
                                        /*specials_in_text=*/false, vocab_size, eod, name);
}

std::unique_ptr<Tokenizer> make_megatron(const TokenizerSpec& spec, const std::string& name) {
  const std::string& pattern_name = spec.options.tiktoken_pattern.empty() ? "v2" : spec.options.tiktoken_pattern;
  MT_CHECK(pattern_name == "v1" || pattern_name == "v2",
           "{} is Megatron's JSON vocabulary: --tiktoken-pattern must be v1 or v2, not '{}'", name, pattern_name);
  const int32_t num_special = spec.options.tiktoken_num_special_tokens;
  const int32_t vocab_size = spec.options.vocab_size > 0 ? spec.options.vocab_size : kMegatronDefaultVocabSize;
  const int32_t named = static_cast<int32_t>(std::size(kMegatronSpecialTokens));
  MT_CHECK(num_special >= named && num_special < vocab_size,
           "--tiktoken-num-special-tokens {} must be at least {} (Megatron's named special tokens) and below the "
           "vocabulary size {}",
           num_special, named, vocab_size);
  const std::string sizes =
      fmt::format("--vocab-size {}{} less --tiktoken-num-special-tokens {}; --vocab-size sets the size", vocab_size,
                  spec.options.vocab_size > 0 ? "" : " (Megatron's default)", num_special);
  std::vector<std::string> ranks =
      read_megatron_vocabulary(spec.files.at("model"), name, vocab_size - num_special, sizes);
  SpecialIds specials;
  for (int32_t id = 0; id < num_special; ++id)
    specials.emplace(id < named ? kMegatronSpecialTokens[id] : fmt::format("<SPECIAL_{}>", id), id);
  return std::make_unique<TikTokenizer>(std::move(ranks),
                                        pattern_name == "v1" ? kMegatronV1Pattern : kMegatronV2Pattern, num_special,
                                        std::move(specials), /*specials_in_text=*/true, vocab_size, kMegatronEod,
                                        name);
}

}  // namespace

std::unique_ptr<Tokenizer> make_tiktoken_tokenizer(const TokenizerSpec& spec) {
  const std::string name = "--tokenizer-model " + spec.options.tokenizer_model;
  const std::string& text = spec.files.at("model");
  const size_t first = text.find_first_not_of(" \t\r\n");
  if (first != std::string::npos && text[first] == '[') return make_megatron(spec, name);
  return make_openai(spec, name);
}

}  // namespace mt
