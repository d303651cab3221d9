// Megatron-style tensor parallelism (docs/design.md section 4): which part of each
// tensor a rank of the TP group holds, the TP group's reductions, and the
// vocab-parallel cross-entropy that never gathers the full logits.
#pragma once

#include <cstdint>
#include <vector>

#include "parallel/process_group.h"
#include "runtime/backend.h"
#include "runtime/communicator.h"

namespace mt {

// How a tensor is split over the TP group: into `parts` equal slices along
// `dim`, this rank holding slice `index`; dim -1: whole on every rank.
struct Shard {
  int dim = -1;
  int parts = 1;
  int index = 0;
  bool split() const { return dim >= 0; }
};

// Row-major offset and extent of this rank's block of a tensor of logical
// `shape` (the whole tensor when it is not split).
struct Block {
  std::vector<int64_t> offset, count;
};
Block shard_block(const std::vector<int64_t>& shape, const Shard& shard);

// Sequence parallelism (Megatron's --sequence-parallel; docs/design.md
// section 4.1): outside the TP-split products a micro-batch's [n, width]
// rows are split over the TP group, rank r holding rows [r n/TP, (r+1) n/TP)
// (n divides by TP). gather_rows writes every rank's rows into whole
// [n, width]; reduce_scatter_rows sums the ranks' partial [n, width] and
// leaves this rank's rows of the sum in `local`. With one rank or without
// `split`, whole is local (gather_rows returns `local`) and the reduction is
// an all-reduce in place.
template <typename T>
const T* gather_rows(Backend<T>& be, const ProcessGroup& tp, bool split, const T* local, T* whole, size_t n,
                     size_t width);
template <typename T>
void reduce_scatter_rows(const ProcessGroup& tp, bool split, T* partial, T* local, size_t n, size_t width);

// Cross-entropy over a vocabulary split across the TP group: logits [n, v]
// are this rank's slice [vocab_start, vocab_start + v). Writes every token's
// full-vocabulary loss to losses[n] on every rank, keeping in stats [3 n]
// the row maxima and sums that the gradient needs. The only traffic is 3
// numbers a token. Logits, losses and stats are acc_t<T> (float32 under bf16).
template <typename T>
void vocab_parallel_cross_entropy(Backend<T>& be, const ProcessGroup& tp, acc_t<T>* losses,
                                  const acc_t<T>* logits, const int32_t* targets, int n, int v,
                                  int vocab_start, acc_t<T>* stats);
// dlogits = (softmax - onehot) * dscale for the slice, in T, from the stats
// of the forward call; no traffic.
template <typename T>
void vocab_parallel_cross_entropy_grad(Backend<T>& be, T* dlogits, const acc_t<T>* logits,
                                       const int32_t* targets, int n, int v, int vocab_start,
                                       double dscale, const acc_t<T>* stats);

}  // namespace mt
