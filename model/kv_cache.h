// Generation's key/value cache on one rank: for each of its stage's layers,
// the keys and values (after RoPE) of every position so far of up to
// `sequences` sequences, [sequences, kv heads, positions, head_dim] (this
// TP rank's kv heads), so each new token costs one position of work
// instead of the whole prefix; and each sequence's kept expert assignments
// a layer, so that capacity treats a token as the full pass over its
// sequence would (SequenceCapacity). A step's rows are tokens of any of the
// sequences at their own positions: a prompt's rows, or one new token each.
#pragma once

#include <cstdint>
#include <vector>

#include "model/config.h"
#include "model/router.h"
#include "runtime/backend.h"

namespace mt {

// One step of generation: n rows, host-side.
struct DecodeRows {
  std::vector<int32_t> token;     // [n]
  std::vector<int32_t> sequence;  // [n] the cache slot of the row's sequence
  std::vector<int32_t> position;  // [n] its position there; a sequence's rows in order
  int size() const { return int(token.size()); }
  void add(int32_t t, int32_t s, int32_t p) {
    token.push_back(t);
    sequence.push_back(s);
    position.push_back(p);
  }
};

template <typename T>
struct KvCache {
  // layers: the stage's; max_rows: the most rows a step may have.
  KvCache(Backend<T>& be, const ModelConfig& cfg, const TpShape& tp, int layers, int sequences, int max_rows)
      : shape{sequences, tp.kv_heads, cfg.seq_length, cfg.head_dim()},
        experts(cfg.is_moe() ? cfg.num_experts : 0),
        capacity(expert_capacity(cfg.capacity_factor, cfg.seq_length, cfg.num_experts, cfg.router_topk)),
        used(size_t(sequences) * layers * experts, 0),
        row_sequence(be, size_t(max_rows)),
        row_position(be, size_t(max_rows)) {
    const size_t n = size_t(sequences) * shape.kv_heads * shape.positions * shape.head_dim;
    for (int l = 0; l < layers; ++l) {
      k.emplace_back(be, n);
      v.emplace_back(be, n);
    }
  }
  // A new sequence takes slot s: no expert has taken any of its tokens.
  void start(int s) {
    const size_t per = k.size() * size_t(experts);
    std::fill(used.begin() + ptrdiff_t(s * per), used.begin() + ptrdiff_t((s + 1) * per), 0);
  }
  // Layer l's capacity over a step's rows.
  SequenceCapacity capacity_of(int l, const DecodeRows& rows) {
    SequenceCapacity c{capacity, std::vector<int32_t*>(size_t(rows.size()))};
    for (int i = 0; i < rows.size(); ++i)
      c.used[size_t(i)] = used.data() + (size_t(rows.sequence[size_t(i)]) * k.size() + size_t(l)) * experts;
    return c;
  }

  KvCacheShape shape;
  int experts;
  int capacity;                         // of an expert over one sequence's full pass
  std::vector<int32_t> used;            // [sequences, layers, experts] kept assignments so far
  std::vector<DeviceBuffer<T>> k, v;    // [layers] of [sequences, kv heads, positions, hd]
  DeviceBuffer<T, int32_t> row_sequence, row_position;  // [max rows] the step's rows on the device
};

// Bytes of the cache of one sequence of the whole model (every layer, all
// kv_heads), in elements of `bytes` each.
inline int64_t kv_cache_bytes_per_sequence(const ModelConfig& cfg, int kv_heads, int bytes) {
  return 2 * int64_t(cfg.num_layers) * kv_heads * cfg.seq_length * cfg.head_dim() * bytes;
}

}  // namespace mt
