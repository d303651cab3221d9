// Megatron-LM's three SentencePiece types (docs/data.md), on Debian's
// libsentencepiece, each from the bytes of a .model file ("model", from
// --tokenizer-model). They share the model's own encoding and decoding and
// differ, as Megatron's legacy megatron/training/tokenizer/tokenizer.py
// defined them (the classes _SentencePieceTokenizer,
// _GPTSentencePieceTokenizer, _Llama2Tokenizer, at Megatron-LM 3257093930^,
// where these --tokenizer-type names were introduced), in what they add:
//   SentencePieceTokenizer     the model's pieces, then <CLS>, <SEP>, <EOD>,
//                              <MASK> and the pad, BOS and EOS pieces (<PAD>,
//                              <BOS>, <EOS> where the model has none), each
//                              only if the model lacks that piece, in that
//                              order (--vocab-extra-ids, which moetrain does
//                              not have, is 0); a literal occurrence of any of
//                              these tokens in the text is that token's id;
//                              eod is <EOD>.
//   GPTSentencePieceTokenizer  the model's pieces alone; eod is the model's EOS.
//   Llama2Tokenizer            the model's pieces alone; encode puts the
//                              model's BOS first (Megatron's tokenize(bos=True,
//                              eos=False)); eod is the model's EOS.
// Megatron-LM since 3257093930 (megatron/core/tokenizers) builds all three
// names as one class that behaves as GPTSentencePieceTokenizer does here.
//
// Text that is not valid UTF-8: SentencePiece's normalizer turns each byte
// that does not start a valid UTF-8 character into U+FFFD before encoding
// (normalizer.cc, NormalizePrefix), so such a document decodes with U+FFFD
// in place of each such byte, not to its bytes; valid text round-trips
// exactly when the model's normalization is the identity (train-tokenizer's
// models are), and otherwise comes back normalized (nmt_nfkc: NFKC, runs of
// spaces made one, leading and trailing spaces dropped).
#include <sentencepiece_processor.h>

#include <charconv>
#include <type_traits>
#include <unordered_map>

#include "runtime/check.h"
#include "tokenizer/tokenizer_types.h"

namespace mt {

namespace {

static_assert(std::is_same_v<int, int32_t>, "SentencePiece's ids are int");

// One SentencePiece model: its own encoding and decoding, which the types
// below share.
class SentencePieceModel {
 public:
  explicit SentencePieceModel(const TokenizerSpec& spec) : path_(spec.options.tokenizer_model) {
    const sentencepiece::util::Status status = sp_.LoadFromSerializedProto(spec.files.at("model"));
    MT_CHECK(status.ok(), "--tokenizer-model {}: not a SentencePiece model; SentencePiece says: {}", path_,
             status.message());
  }

  const std::string& path() const { return path_; }
  int32_t pieces() const { return sp_.GetPieceSize(); }
  const std::string& piece(int32_t id) const { return sp_.IdToPiece(id); }
  // The model's reserved ids; -1 where it has none.
  int32_t bos() const { return sp_.bos_id(); }
  int32_t eos() const { return sp_.eos_id(); }
  int32_t pad() const { return sp_.pad_id(); }

  std::vector<int32_t> encode(std::string_view text) const {
    std::vector<int32_t> ids;
    const sentencepiece::util::Status status = sp_.Encode(text, &ids);
    MT_CHECK(status.ok(), "--tokenizer-model {}: SentencePiece cannot encode {} bytes: {}", path_, text.size(),
             status.message());
    return ids;
  }

  // The text of ids, each a piece of the model, as SentencePiece decodes
  // it, except that a byte piece (byte fallback's <0xNN>) gives its byte
  // where SentencePiece would give U+FFFD because it is not part of a whole
  // UTF-8 character: so a character cut between two calls comes back as its
  // bytes (tokenizer.h), and ids whose bytes form whole characters decode to
  // exactly SentencePiece's text. A model with a denormalizer rewrites the
  // text after the pieces; its text is SentencePiece's, as it is.
  std::string decode(std::span<const int32_t> ids) const {
    sentencepiece::ImmutableSentencePieceText decoded;
    const sentencepiece::util::Status status =
        sp_.Decode(std::vector<int>(ids.begin(), ids.end()), decoded.mutable_proto());
    MT_CHECK(status.ok(), "--tokenizer-model {}: SentencePiece cannot decode {} ids: {}", path_, ids.size(),
             status.message());
    std::string surfaces, text;
    for (size_t i = 0; i < decoded.pieces_size(); ++i) {
      const auto piece = decoded.pieces(int(i));
      surfaces += piece.surface();
      if (sp_.IsByte(int(piece.id())))
        text.push_back(byte_of(piece.piece()));
      else
        text += piece.surface();
    }
    return surfaces == decoded.text() ? text : decoded.text();
  }

 private:
  // The byte of a byte piece, "<0x41>" for 'A'.
  char byte_of(const std::string& piece) const {
    unsigned value = 0;
    const bool hex = piece.size() == 6 && piece.compare(0, 3, "<0x") == 0 && piece[5] == '>' &&
                     std::from_chars(piece.data() + 3, piece.data() + 5, value, 16).ptr == piece.data() + 5;
    MT_CHECK(hex, "--tokenizer-model {}: byte piece '{}' is not <0xNN>", path_, piece);
    return static_cast<char>(value);
  }

  std::string path_;
  sentencepiece::SentencePieceProcessor sp_;
};

// The id range every decode checks.
void check_ids(std::span<const int32_t> ids, int32_t vocab_size) {
  for (size_t i = 0; i < ids.size(); ++i)
    MT_CHECK(ids[i] >= 0 && ids[i] < vocab_size, "token id {} at position {} is outside the vocabulary of {}",
             ids[i], i, vocab_size);
}

// GPTSentencePieceTokenizer, and Llama2Tokenizer (add_bos): the model's
// pieces, its EOS the end of a document.
class GPTSentencePieceTokenizer : public Tokenizer {
 public:
  GPTSentencePieceTokenizer(const TokenizerSpec& spec, bool add_bos) : model_(spec), add_bos_(add_bos) {
    MT_CHECK(model_.eos() >= 0, "--tokenizer-model {}: the model has no EOS piece, which --tokenizer-type {} ends "
             "each document with", model_.path(), spec.options.type);
    MT_CHECK(!add_bos || model_.bos() >= 0, "--tokenizer-model {}: the model has no BOS piece, which "
             "--tokenizer-type {} starts each text with", model_.path(), spec.options.type);
  }

  std::vector<int32_t> encode(std::string_view text) const override {
    std::vector<int32_t> ids = model_.encode(text);
    if (add_bos_) ids.insert(ids.begin(), model_.bos());
    return ids;
  }
  std::string decode(std::span<const int32_t> ids) const override {
    check_ids(ids, vocab_size());
    return model_.decode(ids);
  }
  int32_t vocab_size() const override { return model_.pieces(); }
  int32_t eod() const override { return model_.eos(); }

 private:
  SentencePieceModel model_;
  bool add_bos_;
};

// SentencePieceTokenizer: the model's pieces and Megatron's special tokens.
class SentencePieceTokenizer : public Tokenizer {
 public:
  explicit SentencePieceTokenizer(const TokenizerSpec& spec) : model_(spec) {
    std::unordered_map<std::string, int32_t> vocab;
    for (int32_t id = 0; id < model_.pieces(); ++id) vocab[model_.piece(id)] = id;
    vocab_size_ = model_.pieces();
    auto add = [&](const std::string& token) {
      auto [it, added] = vocab.try_emplace(token, vocab_size_);
      if (added) ++vocab_size_;
      for (const Special& s : specials_)
        if (s.token == token) return it->second;
      specials_.push_back({token, it->second});
      return it->second;
    };
    add("<CLS>");
    add("<SEP>");
    eod_ = add("<EOD>");
    add("<MASK>");
    add(model_.pad() >= 0 ? model_.piece(model_.pad()) : "<PAD>");
    add(model_.bos() >= 0 ? model_.piece(model_.bos()) : "<BOS>");
    add(model_.eos() >= 0 ? model_.piece(model_.eos()) : "<EOS>");
  }

  // The text cut at each special token's first occurrence, the earliest
  // first (at one position, the token added first), each piece between
  // encoded by the model on its own.
  std::vector<int32_t> encode(std::string_view text) const override {
    std::vector<int32_t> ids;
    // Each token's next occurrence at or after `at` (npos: none), found again
    // only once `at` has passed it.
    std::vector<size_t> next;
    for (const Special& s : specials_) next.push_back(text.find(s.token));
    size_t at = 0;
    while (true) {
      size_t best = specials_.size();
      for (size_t s = 0; s < specials_.size(); ++s) {
        if (next[s] != std::string_view::npos && next[s] < at) next[s] = text.find(specials_[s].token, at);
        if (next[s] != std::string_view::npos && (best == specials_.size() || next[s] < next[best])) best = s;
      }
      if (best == specials_.size()) break;
      const std::vector<int32_t> piece = model_.encode(text.substr(at, next[best] - at));
      ids.insert(ids.end(), piece.begin(), piece.end());
      ids.push_back(specials_[best].id);
      at = next[best] + specials_[best].token.size();
    }
    const std::vector<int32_t> rest = model_.encode(text.substr(at));
    ids.insert(ids.end(), rest.begin(), rest.end());
    return ids;
  }

  // Megatron's detokenize: the model decodes the ids between special
  // tokens, each of which is written as " token ".
  std::string decode(std::span<const int32_t> ids) const override {
    check_ids(ids, vocab_size_);
    std::string text;
    size_t from = 0;
    for (size_t i = 0; i < ids.size(); ++i)
      for (const Special& s : specials_)
        if (s.id == ids[i]) {
          text += model_.decode(ids.subspan(from, i - from)) + " " + s.token + " ";
          from = i + 1;
          break;
        }
    return text + model_.decode(ids.subspan(from));
  }
  int32_t vocab_size() const override { return vocab_size_; }
  int32_t eod() const override { return eod_; }

 private:
  struct Special {
    std::string token;
    int32_t id;
  };
  SentencePieceModel model_;
  std::vector<Special> specials_;  // in the order Megatron adds them
  int32_t vocab_size_ = 0;
  int32_t eod_ = -1;
};

}  // namespace

std::unique_ptr<Tokenizer> make_sentencepiece_tokenizer(const TokenizerSpec& spec) {
  const std::string& type = spec.options.type;
  if (type == "SentencePieceTokenizer") return std::make_unique<SentencePieceTokenizer>(spec);
  if (type == "GPTSentencePieceTokenizer") return std::make_unique<GPTSentencePieceTokenizer>(spec, false);
  if (type == "Llama2Tokenizer") return std::make_unique<GPTSentencePieceTokenizer>(spec, true);
  MT_FAIL("--tokenizer-type {} is not a SentencePiece type", type);
}

}  // namespace mt
