// HuggingFaceTokenizer (docs/data.md): a Hugging Face tokenizer.json whose
// model is byte-level BPE, the layout of GPT-2's, Llama-3's, Qwen2/2.5/3's
// and Mistral's Tekken (Nemo) files, with the ids of Hugging Face's
// tokenizers library. What it reads:
//
//   normalizer      null, NFC (utf8proc), Sequence of those
//   pre_tokenizer   Split (Regex or String pattern, behavior Isolated) steps,
//                   then exactly one ByteLevel (add_prefix_space, use_regex)
//                   last; Sequence to chain them
//   model           BPE over GPT-2's byte characters (every byte has its
//                   token), merges as "a b" or ["a", "b"], ignore_merges
//   post_processor  null, ByteLevel (offsets only), TemplateProcessing (its
//                   "single" template), Sequence of those
//   decoder         ByteLevel, or null (the tokens' strings joined by spaces)
//   added_tokens    split out of the text as Hugging Face's encode does
//
// Any other component, or option value that changes the ids, is refused by
// name. encode is Megatron's tokenize, which for HuggingFaceTokenizer is
// tokenizer(text).input_ids: the post-processor's special tokens are added
// (Llama-3's <|begin_of_text|>), and added tokens written in the text
// (special or not) become their ids.
#include <fmt/format.h>
#include <utf8proc.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cstdlib>
#include <optional>
#include <unordered_map>

#include "runtime/check.h"
#include "tokenizer/byte_pair_encoding.h"
#include "tokenizer/regex_splitter.h"
#include "tokenizer/tokenizer_types.h"

namespace mt {

namespace {

using nlohmann::json;

// The regex of tokenizers' ByteLevel pre-tokenizer with use_regex
// (pre_tokenizers/byte_level.rs).
const char* const kByteLevelPattern = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// The end-of-document token: Megatron's eod is the tokenizer's eos_token,
// which tokenizer_config.json names, not tokenizer.json; moetrain reads
// tokenizer.json alone and takes the first of these that is a token
// (GPT-2 and Qwen; Llama-3; Mistral).
const std::array<const char*, 3> kEodTokens = {"<|endoftext|>", "<|end_of_text|>", "</s>"};

// tokenizer.json as read: its name for messages ("--tokenizer-model
// /x/tokenizer.json") and checked access to its members, each error naming
// the JSON path of the problem.
struct JsonFile {
  std::string name;

  [[noreturn]] void fail(const std::string& path, const std::string& what) const {
    MT_FAIL("{}: {}: {}", name, path, what);
  }
  const json& member(const json& object, const std::string& path, const char* key) const {
    if (!object.is_object()) fail(path, fmt::format("is {}, not an object", object.type_name()));
    const auto it = object.find(key);
    if (it == object.end()) fail(path, fmt::format("has no \"{}\"", key));
    return *it;
  }
  // An optional boolean member: absent or null is `fallback`.
  bool boolean(const json& object, const std::string& path, const char* key, bool fallback) const {
    const auto it = object.find(key);
    if (it == object.end() || it->is_null()) return fallback;
    if (!it->is_boolean()) fail(path + "." + key, fmt::format("is {}, not true or false", it->type_name()));
    return it->get<bool>();
  }
  std::string string(const json& value, const std::string& path) const {
    if (!value.is_string()) fail(path, fmt::format("is {}, not a string", value.type_name()));
    return value.get<std::string>();
  }
  std::string type(const json& component, const std::string& path) const {
    return string(member(component, path, "type"), path + ".type");
  }
  const json& array(const json& object, const std::string& path, const char* key) const {
    const json& value = member(object, path, key);
    if (!value.is_array()) fail(path + "." + key, fmt::format("is {}, not an array", value.type_name()));
    return value;
  }
};

// Added tokens matched in a text: at the leftmost position where one
// starts, the longest (tokenizers' Aho-Corasick, LeftmostLongest). A
// content's first byte is a UTF-8 lead byte, so a match starts on a
// character of valid text.
struct AddedTokenSet {
  struct TransparentHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>()(s); }
  };
  std::unordered_map<std::string, int32_t, TransparentHash, std::equal_to<>> ids;  // text to match -> id
  std::vector<size_t> lengths;                   // the distinct lengths, longest first
  std::array<bool, 256> first_byte{};

  void add(const std::string& text, int32_t id) {
    ids.emplace(text, id);
    first_byte[static_cast<unsigned char>(text[0])] = true;
    if (std::find(lengths.begin(), lengths.end(), text.size()) == lengths.end()) {
      lengths.push_back(text.size());
      std::sort(lengths.rbegin(), lengths.rend());
    }
  }

  // Calls gap(text) for each non-empty stretch between matches and
  // match(id) for each match, in order.
  template <typename Gap, typename Match>
  void scan(std::string_view text, Gap&& gap, Match&& match) const {
    size_t start = 0;  // of the stretch not yet passed on
    for (size_t at = 0; at < text.size() && !ids.empty();) {
      int32_t id = -1;
      size_t length = 0;
      if (first_byte[static_cast<unsigned char>(text[at])])
        for (size_t l : lengths) {
          if (l > text.size() - at) continue;
          const auto it = ids.find(text.substr(at, l));
          if (it != ids.end()) {
            id = it->second;
            length = l;
            break;
          }
        }
      if (id < 0) {
        ++at;
        continue;
      }
      if (start < at) gap(text.substr(start, at - start));
      match(id);
      at += length;
      start = at;
    }
    if (start < text.size()) gap(text.substr(start));
  }
};

// Unicode NFC of valid UTF-8 (utf8proc); ASCII is its own NFC.
std::string nfc(std::string_view text) {
  if (std::all_of(text.begin(), text.end(), [](char c) { return static_cast<unsigned char>(c) < 0x80; }))
    return std::string(text);
  utf8proc_uint8_t* out = nullptr;
  const utf8proc_ssize_t n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(text.data()),
                                          static_cast<utf8proc_ssize_t>(text.size()), &out,
                                          static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_COMPOSE));
  MT_CHECK(n >= 0, "NFC normalization failed: {}", utf8proc_errmsg(n));
  std::string result(reinterpret_cast<const char*>(out), static_cast<size_t>(n));
  std::free(out);
  return result;
}

// A pattern as a regex: {"Regex": ...} as it is, {"String": ...} with every
// ASCII punctuation and space escaped, so it matches only itself.
std::string split_pattern(const JsonFile& file, const json& pattern, const std::string& path) {
  if (pattern.is_object() && pattern.size() == 1 && pattern.contains("Regex"))
    return file.string(pattern["Regex"], path + ".Regex");
  if (pattern.is_object() && pattern.size() == 1 && pattern.contains("String")) {
    std::string regex;
    for (char c : file.string(pattern["String"], path + ".String")) {
      const unsigned char u = static_cast<unsigned char>(c);
      if (u < 0x80 && !std::isalnum(u)) regex += '\\';
      regex += c;
    }
    return regex;
  }
  file.fail(path, "is neither {\"Regex\": ...} nor {\"String\": ...}");
}

class HuggingFaceTokenizer : public Tokenizer {
 public:
  HuggingFaceTokenizer(const std::string& bytes, const std::string& path);

  std::vector<int32_t> encode(std::string_view text) const override;
  std::string decode(std::span<const int32_t> ids) const override;
  int32_t vocab_size() const override { return static_cast<int32_t>(token_text_.size()); }
  int32_t eod() const override { return eod_; }

 private:
  void read_normalizer(const json& j, const std::string& path);
  void read_pre_tokenizer(const json& j, const std::string& path);
  // The vocabulary and the added tokens: ids, token_text_, bpe_.
  void read_model_and_added_tokens(const json& root);
  void read_post_processor(const json& j, const std::string& path);
  void read_decoder(const json& j, const std::string& path);

  // Encodes valid UTF-8: added tokens, normalizer, pre-tokenizer, BPE.
  void encode_valid(std::string_view text, std::vector<int32_t>& ids) const;
  // Pre-tokenizes and BPE-encodes text with no added token in it.
  void encode_section(std::string_view text, std::vector<int32_t>& ids) const;

  JsonFile file_;
  bool nfc_ = false;
  std::vector<RegexSplitter> splits_;  // the Split steps, in order
  bool byte_level_seen_ = false;
  bool add_prefix_space_ = false;
  std::optional<RegexSplitter> byte_level_regex_;  // ByteLevel with use_regex
  std::optional<BytePairEncoding> bpe_;
  // Added tokens matched in the text as it is (normalized false), then in
  // the normalized text (normalized true), as tokenizers does.
  AddedTokenSet raw_added_;
  AddedTokenSet normalized_added_;
  // The post-processor's special tokens around a text's ids.
  std::vector<int32_t> prefix_;
  std::vector<int32_t> suffix_;
  bool template_seen_ = false;
  // What decode gives for each id, and what goes between two ids: the
  // ByteLevel decoder's bytes with nothing between, or, with no decoder, the
  // tokens' strings with a space between (tokenizers' decode).
  std::vector<std::string> token_text_;
  bool byte_level_decoder_ = false;
  int32_t eod_ = -1;
};

HuggingFaceTokenizer::HuggingFaceTokenizer(const std::string& bytes, const std::string& path)
    : file_{"--tokenizer-model " + path} {
  json root;
  try {
    root = json::parse(bytes, json_depth_limit(file_.name));
  } catch (const json::parse_error& e) {
    MT_FAIL("{}: not JSON (at byte {}): {}", file_.name, e.byte, e.what());
  }
  if (!root.is_object()) MT_FAIL("{}: is {}, not a tokenizer.json object", file_.name, root.type_name());
  read_decoder(root.value("decoder", json()), "decoder");
  read_normalizer(root.value("normalizer", json()), "normalizer");
  read_model_and_added_tokens(root);
  read_pre_tokenizer(root.value("pre_tokenizer", json()), "pre_tokenizer");
  if (!byte_level_seen_)
    file_.fail("pre_tokenizer", "has no ByteLevel step, which a byte-level BPE model needs (supported: ByteLevel, "
                                "or Split steps then ByteLevel, in a Sequence)");
  read_post_processor(root.value("post_processor", json()), "post_processor");

  // An added token, or a vocabulary token (the names are printable ASCII:
  // their own byte characters).
  for (const char* name : kEodTokens) {
    for (const AddedTokenSet* added : {&raw_added_, &normalized_added_})
      if (const auto it = added->ids.find(std::string_view(name)); it != added->ids.end()) eod_ = it->second;
    if (eod_ < 0) eod_ = bpe_->find(name);
    if (eod_ >= 0) break;
  }
  if (eod_ < 0)
    MT_FAIL("{}: no end-of-document token: none of {}, {}, {} is a token", file_.name, kEodTokens[0], kEodTokens[1],
            kEodTokens[2]);
}

void HuggingFaceTokenizer::read_normalizer(const json& j, const std::string& path) {
  if (j.is_null()) return;
  const std::string type = file_.type(j, path);
  if (type == "NFC") {
    nfc_ = true;
  } else if (type == "Sequence") {
    const json& steps = file_.array(j, path, "normalizers");
    for (size_t i = 0; i < steps.size(); ++i) read_normalizer(steps[i], fmt::format("{}.normalizers[{}]", path, i));
  } else {
    file_.fail(path, fmt::format("normalizer type {} is not supported (supported: NFC, Sequence, null)", type));
  }
}

void HuggingFaceTokenizer::read_pre_tokenizer(const json& j, const std::string& path) {
  if (j.is_null()) file_.fail(path, "is null: a byte-level BPE model needs the ByteLevel pre-tokenizer");
  const std::string type = file_.type(j, path);
  if (type == "Sequence") {
    const json& steps = file_.array(j, path, "pretokenizers");
    for (size_t i = 0; i < steps.size(); ++i) read_pre_tokenizer(steps[i], fmt::format("{}.pretokenizers[{}]", path, i));
  } else if (type == "Split") {
    if (byte_level_seen_) file_.fail(path, "a Split after ByteLevel is not supported (ByteLevel must be the last step)");
    const std::string behavior = file_.string(file_.member(j, path, "behavior"), path + ".behavior");
    if (behavior != "Isolated")
      file_.fail(path + ".behavior", fmt::format("{} is not supported (supported: Isolated)", behavior));
    // invert: with Isolated, matches and the text between them are pieces
    // alike, so inverting the pattern gives the same pieces.
    file_.boolean(j, path, "invert", false);
    const std::string regex = split_pattern(file_, file_.member(j, path, "pattern"), path + ".pattern");
    splits_.emplace_back(regex, fmt::format("{}: {}.pattern", file_.name, path));
  } else if (type == "ByteLevel") {
    if (byte_level_seen_) file_.fail(path, "a second ByteLevel is not supported");
    byte_level_seen_ = true;
    add_prefix_space_ = file_.boolean(j, path, "add_prefix_space", false);
    // trim_offsets changes offsets only.
    if (file_.boolean(j, path, "use_regex", true))
      byte_level_regex_.emplace(kByteLevelPattern, fmt::format("{}: {}", file_.name, path));
  } else {
    file_.fail(path, fmt::format("pre_tokenizer type {} is not supported (supported: ByteLevel, Split, Sequence)", type));
  }
}

void HuggingFaceTokenizer::read_model_and_added_tokens(const json& root) {
  const json& model = file_.member(root, "(top level)", "model");
  // GPT-2's file predates the "type" field: tokenizers then takes the model
  // whose fields it has, BPE for vocab and merges.
  if (model.contains("type")) {
    const std::string type = file_.type(model, "model");
    if (type != "BPE") file_.fail("model", fmt::format("model type {} is not supported (supported: BPE)", type));
  }
  if (model.contains("dropout") && !model["dropout"].is_null() &&
      !(model["dropout"].is_number() && model["dropout"].get<double>() == 0.0))
    file_.fail("model.dropout", fmt::format("{} is not supported (only null or 0: the ids must not be random)",
                                            model["dropout"].dump()));
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"})
    if (model.contains(key) && !model[key].is_null() && model[key] != "")
      file_.fail(fmt::format("model.{}", key), fmt::format("{} is not supported (only null or \"\")", model[key].dump()));
  // unk_token, fuse_unk and byte_fallback act only on a character the
  // vocabulary lacks; every byte has its token here (checked below), so
  // they never do.
  file_.boolean(model, "model", "fuse_unk", false);
  file_.boolean(model, "model", "byte_fallback", false);
  if (model.contains("unk_token") && !model["unk_token"].is_null()) file_.string(model["unk_token"], "model.unk_token");
  const bool ignore_merges = file_.boolean(model, "model", "ignore_merges", false);

  // The vocabulary: ids 0..n-1, each once.
  const json& vocab = file_.member(model, "model", "vocab");
  if (!vocab.is_object()) file_.fail("model.vocab", fmt::format("is {}, not an object", vocab.type_name()));
  const size_t n = vocab.size();
  std::unordered_map<std::string, int32_t> vocab_ids;
  vocab_ids.reserve(n);
  token_text_.assign(n, std::string());
  std::vector<std::string> bpe_tokens(n);
  std::vector<bool> seen(n);
  for (const auto& [token, value] : vocab.items()) {
    if (!value.is_number_integer() || value.get<int64_t>() < 0 || value.get<int64_t>() >= static_cast<int64_t>(n))
      file_.fail("model.vocab", fmt::format("\"{}\" has id {}, not one of 0..{} (the ids are 0 to the size less one)",
                                            token, value.dump(), n - 1));
    const int32_t id = value.get<int32_t>();
    if (seen[id]) file_.fail("model.vocab", fmt::format("id {} is given twice (\"{}\" is one)", id, token));
    seen[id] = true;
    vocab_ids.emplace(token, id);
    // A token in GPT-2's byte characters is those bytes; one with another
    // character (a special token written plainly) is not reachable by BPE,
    // which starts from bytes, and the ByteLevel decoder gives its own UTF-8.
    const std::optional<std::string> token_bytes = unicode_to_bytes(token);
    if (token_bytes) bpe_tokens[id] = *token_bytes;
    token_text_[id] = byte_level_decoder_ && token_bytes ? *token_bytes : token;
  }
  for (int b = 0; b < 256; ++b)
    if (!vocab_ids.count(bytes_to_unicode()[b]))
      file_.fail("model.vocab", fmt::format("has no token for byte 0x{:02x} (\"{}\"): a byte-level BPE has all 256", b,
                                            bytes_to_unicode()[b]));

  // The merges, by priority: their order. A merge of a token outside GPT-2's
  // byte characters could never apply (BPE starts from bytes) and is left out.
  const json& merges = file_.array(model, "model", "merges");
  std::vector<BytePairEncoding::Merge> bpe_merges;
  bpe_merges.reserve(merges.size());
  std::unordered_map<uint64_t, size_t> merge_at;  // (left, right) -> its index, for the error
  merge_at.reserve(merges.size());
  for (size_t i = 0; i < merges.size(); ++i) {
    const std::string path = fmt::format("model.merges[{}]", i);
    std::string left, right;
    if (merges[i].is_string()) {
      const std::string line = merges[i].get<std::string>();
      const size_t space = line.find(' ');
      if (space == std::string::npos || line.find(' ', space + 1) != std::string::npos)
        file_.fail(path, fmt::format("\"{}\" is not two tokens with one space between", line));
      left = line.substr(0, space);
      right = line.substr(space + 1);
    } else if (merges[i].is_array() && merges[i].size() == 2 && merges[i][0].is_string() && merges[i][1].is_string()) {
      left = merges[i][0].get<std::string>();
      right = merges[i][1].get<std::string>();
    } else {
      file_.fail(path, fmt::format("{} is neither \"a b\" nor [\"a\", \"b\"]", merges[i].dump()));
    }
    int32_t ids[3];
    const std::string parts[3] = {left, right, left + right};
    for (int k = 0; k < 3; ++k) {
      const auto it = vocab_ids.find(parts[k]);
      if (it == vocab_ids.end()) file_.fail(path, fmt::format("\"{}\" is not in model.vocab", parts[k]));
      ids[k] = it->second;
    }
    const uint64_t key = (uint64_t{static_cast<uint32_t>(ids[0])} << 32) | static_cast<uint32_t>(ids[1]);
    const auto [it, fresh] = merge_at.emplace(key, i);
    if (!fresh) file_.fail(path, fmt::format("the pair \"{}\" \"{}\" is already model.merges[{}]", left, right, it->second));
    if (!bpe_tokens[ids[0]].empty() && !bpe_tokens[ids[1]].empty())
      bpe_merges.push_back({ids[0], ids[1], ids[2], static_cast<uint32_t>(i)});
  }

  // Added tokens: one in the vocabulary keeps its id there; the others take
  // the ids after the vocabulary in their order, as tokenizers assigns them
  // (it does not read the file's ids; they must agree).
  int32_t next_id = static_cast<int32_t>(n);
  std::unordered_map<std::string, size_t> added_at;
  const json no_tokens = json::array();
  const json& added = root.contains("added_tokens") ? file_.array(root, "(top level)", "added_tokens") : no_tokens;
  for (size_t i = 0; i < added.size(); ++i) {
    const std::string path = fmt::format("added_tokens[{}]", i);
    const json& token = added[i];
    const std::string content = file_.string(file_.member(token, path, "content"), path + ".content");
    if (content.empty()) file_.fail(path + ".content", "is empty");
    const auto [previous, fresh] = added_at.emplace(content, i);
    if (!fresh) file_.fail(path, fmt::format("\"{}\" is already added_tokens[{}]", content, previous->second));
    for (const char* option : {"single_word", "lstrip", "rstrip"})
      if (file_.boolean(token, path, option, false))
        file_.fail(path, fmt::format("\"{}\": {} true is not supported", content, option));
    const bool special = file_.boolean(token, path, "special", false);
    const bool normalized = file_.boolean(token, path, "normalized", !special);
    const json& id_json = file_.member(token, path, "id");
    const auto in_vocab = vocab_ids.find(content);
    const int32_t id = in_vocab != vocab_ids.end() ? in_vocab->second : next_id++;
    if (!id_json.is_number_integer() || id_json.get<int64_t>() != id)
      file_.fail(path + ".id", fmt::format("\"{}\" has id {}, but tokenizers gives it {} ({})", content, id_json.dump(), id,
                                           in_vocab != vocab_ids.end() ? "its id in model.vocab"
                                                                       : "the next id after model.vocab and the added "
                                                                         "tokens before it"));
    // Matched, and decoded, as its normalized form when it is normalized
    // (tokenizers' normalized_cache); decoded as that text, not through the
    // ByteLevel decoder, so that it round-trips (as tokenizers.js does).
    const std::string text = normalized && nfc_ ? nfc(content) : content;
    (normalized ? normalized_added_ : raw_added_).add(text, id);
    if (id == static_cast<int32_t>(token_text_.size())) {
      token_text_.push_back(text);
      bpe_tokens.emplace_back();  // an id with no BPE token
    } else {
      token_text_[id] = text;
    }
  }
  bpe_.emplace(std::move(bpe_tokens), bpe_merges, ignore_merges, file_.name);
}

void HuggingFaceTokenizer::read_post_processor(const json& j, const std::string& path) {
  if (j.is_null()) return;
  const std::string type = file_.type(j, path);
  if (type == "ByteLevel") return;  // it changes offsets only
  if (type == "Sequence") {
    const json& steps = file_.array(j, path, "processors");
    for (size_t i = 0; i < steps.size(); ++i) read_post_processor(steps[i], fmt::format("{}.processors[{}]", path, i));
    return;
  }
  if (type != "TemplateProcessing")
    file_.fail(path, fmt::format("post_processor type {} is not supported (supported: ByteLevel, "
                                 "TemplateProcessing, Sequence, null)",
                                 type));
  if (template_seen_) file_.fail(path, "a second TemplateProcessing is not supported");
  template_seen_ = true;
  // The "single" template: the special tokens before and after the text ($A).
  const json& single = file_.array(j, path, "single");
  const json& specials = file_.member(j, path, "special_tokens");
  bool sequence_seen = false;
  for (size_t i = 0; i < single.size(); ++i) {
    const std::string item_path = fmt::format("{}.single[{}]", path, i);
    const json& item = single[i];
    if (item.is_object() && item.contains("Sequence")) {
      const std::string id = file_.string(file_.member(item["Sequence"], item_path + ".Sequence", "id"),
                                          item_path + ".Sequence.id");
      if (id != "A" || sequence_seen) file_.fail(item_path, fmt::format("sequence {} is not the one text ($A)", id));
      sequence_seen = true;
    } else if (item.is_object() && item.contains("SpecialToken")) {
      const std::string name = file_.string(file_.member(item["SpecialToken"], item_path + ".SpecialToken", "id"),
                                            item_path + ".SpecialToken.id");
      const std::string special_path = fmt::format("{}.special_tokens[\"{}\"]", path, name);
      const json& ids = file_.array(file_.member(specials, path + ".special_tokens", name.c_str()), special_path, "ids");
      for (const json& id : ids) {
        if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() >= vocab_size())
          file_.fail(special_path + ".ids", fmt::format("{} is not an id below {}", id.dump(), vocab_size()));
        (sequence_seen ? suffix_ : prefix_).push_back(id.get<int32_t>());
      }
    } else {
      file_.fail(item_path, fmt::format("{} is neither a SpecialToken nor a Sequence", item.dump()));
    }
  }
  if (!sequence_seen) file_.fail(path + ".single", "has no $A (the text)");
}

void HuggingFaceTokenizer::read_decoder(const json& j, const std::string& path) {
  // null: tokenizers joins the tokens' strings (GPT-2's byte characters, not
  // the text's bytes) with spaces.
  if (j.is_null()) return;
  const std::string type = file_.type(j, path);
  if (type != "ByteLevel")
    file_.fail(path, fmt::format("decoder type {} is not supported (supported: ByteLevel, null)", type));
  byte_level_decoder_ = true;
}

std::vector<int32_t> HuggingFaceTokenizer::encode(std::string_view text) const {
  std::vector<int32_t> ids(prefix_);
  // Invalid UTF-8 (the rule of the byte-level tokenizers, docs/data.md):
  // scanning the text from the start, a byte that does not begin a
  // complete, valid UTF-8 character (shortest form, no surrogates, at most
  // U+10FFFF) is invalid: it alone becomes its single-byte token and the
  // scan goes on at the next byte. Each maximal run of valid text between
  // invalid bytes is tokenized on its own (added tokens, normalizer,
  // pre-tokenizer, BPE), so decode(encode(x)) == x for any bytes (but for
  // NFC, which gives the normalized text). The post-processor's special
  // tokens go around the whole text once.
  for (;;) {
    const size_t valid = valid_utf8_prefix(text);
    if (valid > 0) encode_valid(text.substr(0, valid), ids);
    if (valid == text.size()) break;
    ids.push_back(bpe_->byte_token(static_cast<uint8_t>(text[valid])));
    text.remove_prefix(valid + 1);
  }
  ids.insert(ids.end(), suffix_.begin(), suffix_.end());
  return ids;
}

void HuggingFaceTokenizer::encode_valid(std::string_view text, std::vector<int32_t>& ids) const {
  auto add_id = [&](int32_t id) { ids.push_back(id); };
  auto add_section = [&](std::string_view section) { encode_section(section, ids); };
  raw_added_.scan(
      text,
      [&](std::string_view gap) {
        if (nfc_)
          normalized_added_.scan(nfc(gap), add_section, add_id);
        else
          normalized_added_.scan(gap, add_section, add_id);
      },
      add_id);
}

void HuggingFaceTokenizer::encode_section(std::string_view text, std::vector<int32_t>& ids) const {
  // Each Split step cuts every piece of the step before.
  std::vector<std::string_view> pieces{text}, cut;
  for (const RegexSplitter& split : splits_) {
    cut.clear();
    for (std::string_view piece : pieces) split.split(piece, cut, RegexSplitter::Gaps::kKeep);
    pieces.swap(cut);
  }
  // ByteLevel, on each piece: a space in front (add_prefix_space), its
  // regex (use_regex), then BPE over the bytes.
  std::string spaced;
  for (std::string_view piece : pieces) {
    if (add_prefix_space_ && piece.front() != ' ') {
      spaced.clear();
      spaced += ' ';
      spaced += piece;
      piece = spaced;
    }
    if (!byte_level_regex_) {
      bpe_->encode_piece(piece, ids);
      continue;
    }
    cut.clear();
    byte_level_regex_->split(piece, cut, RegexSplitter::Gaps::kKeep);
    for (std::string_view word : cut) bpe_->encode_piece(word, ids);
  }
}

std::string HuggingFaceTokenizer::decode(std::span<const int32_t> ids) const {
  std::string text;
  for (size_t i = 0; i < ids.size(); ++i) {
    MT_CHECK(ids[i] >= 0 && ids[i] < vocab_size(), "token id {} at position {} is outside the vocabulary of {}",
             ids[i], i, vocab_size());
    if (i > 0 && !byte_level_decoder_) text += ' ';
    text += token_text_[ids[i]];
  }
  return text;
}

}  // namespace

std::unique_ptr<Tokenizer> make_huggingface_tokenizer(const TokenizerSpec& spec) {
  return std::make_unique<HuggingFaceTokenizer>(spec.files.at("model"), spec.options.tokenizer_model);
}

}  // namespace mt
