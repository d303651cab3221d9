// Byte-level byte-pair encoding, the core GPT2BPETokenizer, TikTokenizer and
// HuggingFaceTokenizer share (docs/data.md): a vocabulary of tokens (byte
// strings) and a merge table. A piece of text (one pre-tokenizer match)
// starts as its single-byte tokens; the adjacent pair with the lowest merge
// priority is merged, the leftmost of equals first, until no adjacent pair
// has a merge. That is tiktoken's byte_pair_merge when a pair's priority is
// the rank of its concatenation (merges_from_ranks), and Hugging Face's BPE
// when it is the line of the merge in merges.txt.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace mt {

// GPT-2's stand-ins for bytes in encoder.json, vocab.bpe and tokenizer.json:
// each byte is a printable character (the printable ASCII and Latin-1 bytes
// themselves, the others U+0100 onwards in byte order). The UTF-8 of byte b's
// character.
const std::array<std::string, 256>& bytes_to_unicode();
// The bytes a string of those characters stands for; nullopt when it holds
// another character or is not UTF-8.
std::optional<std::string> unicode_to_bytes(std::string_view text);

class BytePairEncoding {
 public:
  // The pair of adjacent tokens (left, right) becomes token `merged`; of the
  // pairs in a piece, the lowest priority merges first.
  struct Merge {
    int32_t left;
    int32_t right;
    int32_t merged;
    uint32_t priority;
  };

  // tokens[id]: the bytes of token id; an empty string is an id with no token
  // (one a caller keeps for a special token). `source` names the files in
  // messages ("--tokenizer-model /x/cl100k_base.tiktoken"). Errors: a token
  // twice, a byte without its single-byte token, a merge whose ids are not
  // tokens or whose merged token is not left's bytes then right's, a pair
  // twice. Callers check their files first, so their messages can name a
  // line; these are the backstop.
  //
  // whole_piece_first: a piece that is itself a token is that token, merges
  // or not (tiktoken; Hugging Face's ignore_merges). Without it the merges
  // alone decide (GPT-2's encoder.py, Hugging Face's default).
  BytePairEncoding(std::vector<std::string> tokens, const std::vector<Merge>& merges, bool whole_piece_first,
                   std::string source);

  // tiktoken's merges: for each token of two bytes or more (its id is its
  // rank), every split into two tokens is a merge whose priority is that rank.
  static std::vector<Merge> merges_from_ranks(const std::vector<std::string>& tokens);

  // Appends the ids of one piece (any bytes, non-empty) to `ids`.
  void encode_piece(std::string_view piece, std::vector<int32_t>& ids) const;

  // The token of exactly these bytes, or -1.
  int32_t find(std::string_view bytes) const;
  // The bytes of token id (empty for an id with no token); id in [0, size()).
  const std::string& token(int32_t id) const { return tokens_[id]; }
  // The token of single byte b.
  int32_t byte_token(uint8_t b) const { return byte_tokens_[b]; }
  // One past the largest id.
  int32_t size() const { return static_cast<int32_t>(tokens_.size()); }

 private:
  // The merge of (left, right), or nullptr.
  const Merge* find_merge(int32_t left, int32_t right) const;
  // Merges the piece's single-byte tokens by priority; no whole-piece lookup.
  void merge_bytes(std::string_view piece, std::vector<int32_t>& ids) const;

  std::vector<std::string> tokens_;
  // Open addressing over the tokens' bytes, linear probing, at most half
  // full: a slot is (the hash's top 32 bits << 32) | (id + 1), 0 when free.
  std::vector<uint64_t> token_slots_;
  std::array<int32_t, 256> byte_tokens_{};
  // Open addressing over (left, right) keys, linear probing; a power of two
  // in size, at most half full. kEmptyKey marks a free slot.
  static constexpr uint64_t kEmptyKey = ~uint64_t{0};
  std::vector<uint64_t> merge_keys_;
  std::vector<Merge> merge_values_;
  // Whole-piece lookup first: asked for, or, without it, found at
  // construction to give the same ids (every token's bytes merge back to
  // that token), so it is only faster.
  bool whole_piece_first_ = false;
};

}  // namespace mt
