// GPT2BPETokenizer (docs/data.md): GPT-2's byte-level BPE from encoder.json
// (--vocab-file: each token, in GPT-2's printable stand-ins for bytes, to its
// id) and vocab.bpe (--merge-file: a "#version" line, then one merge "a b" a
// line, the earliest merging first). The text is split by GPT-2's pattern
// and each piece merged; text is always ordinary text ("<|endoftext|>" in a
// document is those 13 characters, as in GPT-2's encoder.py and Megatron's
// legacy GPT2 tokenizer). eod is <|endoftext|>, and the vocabulary size is
// the number of entries in encoder.json (50257 for GPT-2's), as Megatron's
// len(tokenizer).
#include <fmt/format.h>

#include <nlohmann/json.hpp>
#include <unordered_map>

#include "runtime/check.h"
#include "tokenizer/byte_pair_encoding.h"
#include "tokenizer/regex_splitter.h"
#include "tokenizer/tokenizer_types.h"

namespace mt {

namespace {

constexpr std::string_view kEndOfText = "<|endoftext|>";

// encoder.json read: each id's bytes, ids 0..n-1 with none missing.
std::vector<std::string> read_encoder_json(const std::string& text, const std::string& name) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text, json_depth_limit(name));
  } catch (const nlohmann::json::parse_error& e) {
    MT_FAIL("{}: not JSON (truncated?): {}", name, e.what());
  }
  MT_CHECK(j.is_object(), "{}: not a JSON object of token -> id (GPT-2's encoder.json)", name);
  std::vector<std::string> tokens(j.size());
  std::vector<std::string> key_of(j.size());  // the entry that holds each id, for messages
  for (const auto& [key, value] : j.items()) {
    MT_CHECK(value.is_number_integer() && value.get<int64_t>() >= 0 && value.get<int64_t>() < int64_t(j.size()),
             "{}: entry \"{}\": the id {} is not an integer in [0, {}) (the number of entries)", name, key,
             value.dump(), j.size());
    const auto id = static_cast<size_t>(value.get<int64_t>());
    MT_CHECK(key_of[id].empty(), "{}: entries \"{}\" and \"{}\" have the same id {}", name, key_of[id], key, id);
    const std::optional<std::string> bytes = unicode_to_bytes(key);
    MT_CHECK(bytes && !bytes->empty(), "{}: entry \"{}\": not a token in GPT-2's stand-ins for bytes", name, key);
    tokens[id] = *bytes;
    key_of[id] = key;
  }
  // n entries with distinct ids below n: every id is there.
  return tokens;
}

// vocab.bpe read against the vocabulary (bytes -> id). Each token is made by
// one line at most, before any line merges it: then a merge never makes a
// pair that merges before it, so GPT-2's encoder.py (which merges every
// occurrence of the lowest pair at once) and the leftmost-first merging of
// BytePairEncoding (Hugging Face's) give the same ids. A file where they
// could differ is refused.
std::vector<BytePairEncoding::Merge> read_merges(const std::string& text, const std::string& name,
                                                 const std::unordered_map<std::string, int32_t>& id_of,
                                                 const std::string& vocab_name) {
  MT_CHECK(text.starts_with("#version"), "{}: line 1: expected '#version ...' (GPT-2's vocab.bpe)", name);
  MT_CHECK(text.ends_with('\n'), "{}: the last line has no newline (truncated?)", name);
  std::vector<BytePairEncoding::Merge> merges;
  std::unordered_map<int32_t, size_t> made_on;    // token id -> the line that makes it
  std::unordered_map<int32_t, size_t> first_use;  // token id -> the first line that merges it
  size_t at = text.find('\n') + 1;
  for (size_t line = 2; at < text.size(); ++line) {
    const size_t end = text.find('\n', at);
    const std::string_view merge(text.data() + at, end - at);
    at = end + 1;
    const size_t space = merge.find(' ');
    MT_CHECK(space != std::string_view::npos && space > 0 && space + 1 < merge.size() &&
                 merge.find(' ', space + 1) == std::string_view::npos,
             "{}: line {}: '{}' is not a merge of two parts 'a b'", name, line, merge);
    const std::string parts[2] = {std::string(merge.substr(0, space)), std::string(merge.substr(space + 1))};
    int32_t ids[3];
    for (int k = 0; k < 3; ++k) {
      const std::string part = k < 2 ? parts[k] : parts[0] + parts[1];
      const std::optional<std::string> bytes = unicode_to_bytes(part);
      const auto it = bytes ? id_of.find(*bytes) : id_of.end();
      MT_CHECK(it != id_of.end(), "{}: line {}: '{}'{} is not a token of {}", name, line, part,
               k == 2 ? " (the merged token)" : "", vocab_name);
      ids[k] = it->second;
    }
    const auto [it, fresh] = made_on.emplace(ids[2], line);
    MT_CHECK(fresh, "{}: line {}: '{} {}' makes the token line {} makes already", name, line, parts[0], parts[1],
             it->second);
    for (int k = 0; k < 2; ++k) first_use.emplace(ids[k], line);
    const auto used = first_use.find(ids[2]);
    MT_CHECK(used == first_use.end(),
             "{}: line {}: '{} {}' makes a token line {} merges already: GPT-2's encoder.py and Hugging Face's BPE "
             "would tokenize differently",
             name, line, parts[0], parts[1], used == first_use.end() ? 0 : used->second);
    merges.push_back({ids[0], ids[1], ids[2], static_cast<uint32_t>(line)});
  }
  return merges;
}

class GPT2BPETokenizer : public Tokenizer {
 public:
  GPT2BPETokenizer(std::vector<std::string> tokens, int32_t eod, const std::vector<BytePairEncoding::Merge>& merges,
                   const std::string& source)
      : bpe_(std::move(tokens), merges, /*whole_piece_first=*/false, source),
        splitter_(kGpt2Pattern, source),
        eod_(eod) {}

  std::vector<int32_t> encode(std::string_view text) const override {
    std::vector<std::string_view> pieces;
    splitter_.split(text, pieces);
    std::vector<int32_t> ids;
    ids.reserve(text.size() / 3);
    for (std::string_view piece : pieces) bpe_.encode_piece(piece, ids);
    return ids;
  }

  std::string decode(std::span<const int32_t> ids) const override {
    std::string text;
    for (size_t i = 0; i < ids.size(); ++i) {
      const int32_t id = ids[i];
      MT_CHECK(id >= 0 && id < bpe_.size(), "token id {} at position {} is outside the vocabulary of {}", id, i,
               bpe_.size());
      text += id == eod_ ? kEndOfText : std::string_view(bpe_.token(id));
    }
    return text;
  }

  int32_t vocab_size() const override { return bpe_.size(); }
  int32_t eod() const override { return eod_; }

 private:
  BytePairEncoding bpe_;
  RegexSplitter splitter_;
  int32_t eod_;
};

}  // namespace

std::unique_ptr<Tokenizer> make_gpt2_bpe_tokenizer(const TokenizerSpec& spec) {
  const std::string vocab_name = "--vocab-file " + spec.options.vocab_file;
  const std::string merges_name = "--merge-file " + spec.options.merge_file;
  std::vector<std::string> tokens = read_encoder_json(spec.files.at("vocab"), vocab_name);
  std::unordered_map<std::string, int32_t> id_of;
  for (size_t id = 0; id < tokens.size(); ++id) {
    const auto [it, fresh] = id_of.emplace(tokens[id], static_cast<int32_t>(id));
    MT_CHECK(fresh, "{}: ids {} and {} are the same bytes", vocab_name, it->second, id);
  }
  for (int b = 0; b < 256; ++b)
    MT_CHECK(id_of.count(std::string(1, static_cast<char>(b))), "{}: no token for byte 0x{:02x} ('{}')", vocab_name,
             b, bytes_to_unicode()[static_cast<size_t>(b)]);
  const auto eod = id_of.find(std::string(kEndOfText));
  MT_CHECK(eod != id_of.end(), "{}: no \"{}\" token (GPT-2's end of document)", vocab_name, kEndOfText);
  const std::vector<BytePairEncoding::Merge> merges =
      read_merges(spec.files.at("merges"), merges_name, id_of, vocab_name);
  // <|endoftext|> is not text to merge into: its id only decodes to its string.
  tokens[static_cast<size_t>(eod->second)].clear();
  return std::make_unique<GPT2BPETokenizer>(std::move(tokens), eod->second, merges,
                                            vocab_name + " and " + merges_name);
}

}  // namespace mt
