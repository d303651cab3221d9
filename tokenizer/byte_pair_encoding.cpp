#include "tokenizer/byte_pair_encoding.h"

#include <fmt/format.h>
#include <utf8proc.h>

#include <algorithm>
#include <bit>

#include "runtime/check.h"

namespace mt {

namespace {

// A token's bytes for a message: printable ASCII as is, the rest as \xNN.
std::string printable(std::string_view bytes) {
  std::string out;
  for (unsigned char c : bytes)
    out += (c >= 0x20 && c < 0x7f && c != '\\') ? std::string(1, static_cast<char>(c)) : fmt::format("\\x{:02x}", c);
  return out;
}

uint64_t pair_key(int32_t left, int32_t right) {
  return (uint64_t{static_cast<uint32_t>(left)} << 32) | static_cast<uint32_t>(right);
}

// Fibonacci hashing: the key times 2^64/phi, top bits.
size_t slot_of(uint64_t key, size_t mask) {
  return static_cast<size_t>((key * 0x9e3779b97f4a7c15ull) >> 20) & mask;
}

// The token table (BytePairEncoding::token_slots_): the id of `bytes`, or -1.
int32_t find_in(const std::vector<uint64_t>& slots, const std::vector<std::string>& tokens, std::string_view bytes) {
  const uint64_t hash = std::hash<std::string_view>()(bytes);
  const uint64_t tag = hash >> 32 << 32;
  const size_t mask = slots.size() - 1;
  for (size_t slot = hash & mask; slots[slot] != 0; slot = (slot + 1) & mask) {
    if ((slots[slot] & ~uint64_t{0xffffffff}) != tag) continue;
    const auto id = static_cast<int32_t>((slots[slot] & 0xffffffff) - 1);
    if (tokens[static_cast<size_t>(id)] == bytes) return id;
  }
  return -1;
}

// Builds the token table; `duplicate(first id, second id)` is called for a
// token that is there already (and must throw).
template <typename OnDuplicate>
std::vector<uint64_t> index_tokens(const std::vector<std::string>& tokens, OnDuplicate duplicate) {
  std::vector<uint64_t> slots(std::bit_ceil(std::max<size_t>(2 * tokens.size(), 16)), 0);
  const size_t mask = slots.size() - 1;
  for (size_t id = 0; id < tokens.size(); ++id) {
    if (tokens[id].empty()) continue;
    const int32_t there = find_in(slots, tokens, tokens[id]);
    if (there >= 0) duplicate(there, static_cast<int32_t>(id));
    const uint64_t hash = std::hash<std::string_view>()(tokens[id]);
    size_t slot = hash & mask;
    while (slots[slot] != 0) slot = (slot + 1) & mask;
    slots[slot] = (hash >> 32 << 32) | (id + 1);
  }
  return slots;
}

}  // namespace

const std::array<std::string, 256>& bytes_to_unicode() {
  static const std::array<std::string, 256> table = [] {
    std::array<std::string, 256> t;
    int next = 256;  // the code point of the next byte that is not printable
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
      const int cp = printable ? b : next++;
      utf8proc_uint8_t buf[4];
      const utf8proc_ssize_t n = utf8proc_encode_char(cp, buf);
      t[b].assign(reinterpret_cast<const char*>(buf), static_cast<size_t>(n));
    }
    return t;
  }();
  return table;
}

std::optional<std::string> unicode_to_bytes(std::string_view text) {
  // The inverse of bytes_to_unicode: every code point there is below 324.
  static const std::array<int16_t, 324> byte_of = [] {
    std::array<int16_t, 324> inv;
    inv.fill(-1);
    for (int b = 0; b < 256; ++b) {
      utf8proc_int32_t cp = 0;
      const std::string& s = bytes_to_unicode()[b];
      utf8proc_iterate(reinterpret_cast<const utf8proc_uint8_t*>(s.data()), static_cast<utf8proc_ssize_t>(s.size()),
                       &cp);
      inv[static_cast<size_t>(cp)] = static_cast<int16_t>(b);
    }
    return inv;
  }();
  std::string bytes;
  bytes.reserve(text.size());
  const auto* p = reinterpret_cast<const utf8proc_uint8_t*>(text.data());
  for (size_t at = 0; at < text.size();) {
    utf8proc_int32_t cp = 0;
    const utf8proc_ssize_t n = utf8proc_iterate(p + at, static_cast<utf8proc_ssize_t>(text.size() - at), &cp);
    if (n <= 0 || cp >= static_cast<utf8proc_int32_t>(byte_of.size()) || byte_of[static_cast<size_t>(cp)] < 0)
      return std::nullopt;
    bytes.push_back(static_cast<char>(byte_of[static_cast<size_t>(cp)]));
    at += static_cast<size_t>(n);
  }
  return bytes;
}

BytePairEncoding::BytePairEncoding(std::vector<std::string> tokens, const std::vector<Merge>& merges,
                                   bool whole_piece_first, std::string source)
    : tokens_(std::move(tokens)) {
  token_slots_ = index_tokens(tokens_, [&](int32_t first, int32_t second) {
    MT_FAIL("{}: token '{}' is both id {} and id {}", source, printable(tokens_[static_cast<size_t>(first)]), first,
            second);
  });
  for (int b = 0; b < 256; ++b) {
    const int32_t id = find(std::string_view(std::string(1, static_cast<char>(b))));
    MT_CHECK(id >= 0, "{}: byte 0x{:02x} has no token (a byte-level vocabulary has all 256)", source, b);
    byte_tokens_[static_cast<size_t>(b)] = id;
  }

  const size_t slots = std::bit_ceil(std::max<size_t>(2 * merges.size(), 16));
  merge_keys_.assign(slots, kEmptyKey);
  merge_values_.resize(slots);
  auto is_token = [&](int32_t id) { return id >= 0 && id < size() && !tokens_[static_cast<size_t>(id)].empty(); };
  for (const Merge& m : merges) {
    MT_CHECK(is_token(m.left) && is_token(m.right) && is_token(m.merged),
             "{}: merge {} {} -> {} names an id with no token", source, m.left, m.right, m.merged);
    const std::string& l = tokens_[static_cast<size_t>(m.left)];
    const std::string& r = tokens_[static_cast<size_t>(m.right)];
    const std::string& merged = tokens_[static_cast<size_t>(m.merged)];
    MT_CHECK(merged.size() == l.size() + r.size() && merged.starts_with(l) && merged.ends_with(r),
             "{}: merge '{}' '{}' gives '{}', not their concatenation", source, printable(l), printable(r),
             printable(merged));
    const uint64_t key = pair_key(m.left, m.right);
    size_t slot = slot_of(key, slots - 1);
    while (merge_keys_[slot] != kEmptyKey) {
      MT_CHECK(merge_keys_[slot] != key, "{}: the pair '{}' '{}' is merged twice", source, printable(l), printable(r));
      slot = (slot + 1) & (slots - 1);
    }
    merge_keys_[slot] = key;
    merge_values_[slot] = m;
  }

  // Without whole-piece lookup asked for, it is still exact when every token's
  // own bytes merge back to that one token: then a piece that is a token
  // merges to it anyway.
  whole_piece_first_ = whole_piece_first;
  if (!whole_piece_first_) {
    bool every_token_merges_to_itself = true;
    std::vector<int32_t> ids;
    for (size_t id = 0; id < tokens_.size() && every_token_merges_to_itself; ++id) {
      if (tokens_[id].empty()) continue;
      ids.clear();
      merge_bytes(tokens_[id], ids);
      every_token_merges_to_itself = ids.size() == 1 && ids[0] == static_cast<int32_t>(id);
    }
    whole_piece_first_ = every_token_merges_to_itself;
  }
}

std::vector<BytePairEncoding::Merge> BytePairEncoding::merges_from_ranks(const std::vector<std::string>& tokens) {
  // A duplicate is left for the constructor to refuse.
  const std::vector<uint64_t> slots = index_tokens(tokens, [](int32_t, int32_t) {});
  std::vector<Merge> merges;
  merges.reserve(tokens.size() * 2);
  for (size_t rank = 0; rank < tokens.size(); ++rank) {
    const std::string_view t = tokens[rank];
    for (size_t cut = 1; cut < t.size(); ++cut) {
      const int32_t left = find_in(slots, tokens, t.substr(0, cut));
      if (left < 0) continue;
      const int32_t right = find_in(slots, tokens, t.substr(cut));
      if (right < 0) continue;
      merges.push_back({left, right, static_cast<int32_t>(rank), static_cast<uint32_t>(rank)});
    }
  }
  return merges;
}

int32_t BytePairEncoding::find(std::string_view bytes) const { return find_in(token_slots_, tokens_, bytes); }

const BytePairEncoding::Merge* BytePairEncoding::find_merge(int32_t left, int32_t right) const {
  const uint64_t key = pair_key(left, right);
  const size_t mask = merge_keys_.size() - 1;
  for (size_t slot = slot_of(key, mask);; slot = (slot + 1) & mask) {
    if (merge_keys_[slot] == key) return &merge_values_[slot];
    if (merge_keys_[slot] == kEmptyKey) return nullptr;
  }
}

void BytePairEncoding::encode_piece(std::string_view piece, std::vector<int32_t>& ids) const {
  if (piece.size() == 1) {
    ids.push_back(byte_tokens_[static_cast<unsigned char>(piece[0])]);
    return;
  }
  if (whole_piece_first_) {
    const int32_t id = find(piece);
    if (id >= 0) {
      ids.push_back(id);
      return;
    }
  }
  merge_bytes(piece, ids);
}

void BytePairEncoding::merge_bytes(std::string_view piece, std::vector<int32_t>& ids) const {
  // The piece's parts are a linked list over its byte offsets (a part is
  // named by the offset of its first byte; an absorbed part's token is -1);
  // the candidate merges are a min-heap by (priority, offset), so the
  // leftmost of equal priorities wins. A candidate is stale when either of
  // its parts has changed token since: a part's token only grows, so an
  // unchanged pair of tokens at the same two offsets is the same pair.
  // Scratch vectors per thread: encode is const and runs on several threads.
  struct Candidate {
    uint32_t priority;
    uint32_t at;
    uint32_t right_at;
    int32_t left;
    int32_t right;
    int32_t merged;
    bool operator>(const Candidate& o) const { return priority != o.priority ? priority > o.priority : at > o.at; }
  };
  thread_local std::vector<int32_t> token;  // by offset, for a part's first byte
  thread_local std::vector<uint32_t> next;  // by offset: the next part's offset, or n
  thread_local std::vector<uint32_t> prev;  // by offset: the previous part's offset, or n (none)
  thread_local std::vector<Candidate> heap;
  const uint32_t n = static_cast<uint32_t>(piece.size());
  token.resize(n);
  next.resize(n);
  prev.resize(n);
  heap.clear();
  auto consider = [&](uint32_t at) {
    const uint32_t right_at = next[at];
    if (right_at >= n) return;
    if (const Merge* m = find_merge(token[at], token[right_at])) {
      heap.push_back({m->priority, at, right_at, token[at], token[right_at], m->merged});
      std::push_heap(heap.begin(), heap.end(), std::greater<>());
    }
  };
  for (uint32_t i = 0; i < n; ++i) {
    token[i] = byte_tokens_[static_cast<unsigned char>(piece[i])];
    next[i] = i + 1;
    prev[i] = i == 0 ? n : i - 1;
  }
  for (uint32_t i = 0; i + 1 < n; ++i) consider(i);
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), std::greater<>());
    const Candidate c = heap.back();
    heap.pop_back();
    if (token[c.at] != c.left || next[c.at] != c.right_at || token[c.right_at] != c.right) continue;
    token[c.at] = c.merged;
    token[c.right_at] = -1;
    next[c.at] = next[c.right_at];
    if (next[c.at] < n) prev[next[c.at]] = c.at;
    if (prev[c.at] < n) consider(prev[c.at]);
    consider(c.at);
  }
  for (uint32_t at = 0; at < n; at = next[at]) ids.push_back(token[at]);
}

}  // namespace mt
