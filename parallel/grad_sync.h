// Makes one step's gradients ready for the optimizer (docs/design.md section 4)
// while the backward pass of the last micro-batch is still running:
//  - gradients of tensors every TP rank holds whole but sees only part of
//    (wk, wv when G < TP) are summed over the TP group;
//  - with data parallelism, the flat gradient buffer is reduce-scattered
//    over the DP group in buckets (ZeRO-1), each launched as a non-blocking
//    collective as soon as the backward pass has finished every gradient in
//    it, so communication overlaps the rest of the backward pass.
// The layout is Megatron's distributed optimizer: the flat buffer (padded so
// that DP divides it) is cut into buckets from its end, the order in which
// the backward pass finishes gradients; DP rank r owns the r-th 1/DP of
// every bucket. Shards ignore tensor boundaries, so any parameter count works.
// With expert parallelism the buffer has two regions (model/parameters.h,
// lay_out_regions), each cut into buckets and sharded over its own group:
// the shared tensors over DP, this rank's experts over expert-DP.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "parallel/tensor_parallel.h"
#include "runtime/backend.h"
#include "runtime/communicator.h"

namespace mt {

struct FlatRange {
  size_t begin = 0, end = 0;
  size_t size() const { return end - begin; }
};

// n rounded up to a multiple of dp: the flat buffers' size under ZeRO-1.
size_t padded_size(size_t n, int dp);
// Buckets of a padded buffer, each bucket_elems rounded up to a multiple of
// dp, cut from the end (the lowest one takes the remainder); ascending.
std::vector<FlatRange> grad_buckets(size_t padded, int dp, size_t bucket_elems);
// DP rank r's part of every bucket, ascending: the flat ranges it updates.
std::vector<FlatRange> shard_ranges(const std::vector<FlatRange>& buckets, int dp, int dp_rank);

// Communication of the last step(s), for the logs and benchmarks.
struct GradSyncStats {
  double exposed_seconds = 0.0;  // waiting for reduce-scatters after the backward pass
  double all_gather_seconds = 0.0;
  uint64_t reduce_scatter_bytes = 0;  // bytes of gradient buffer reduce-scattered
  uint64_t all_gather_bytes = 0;
  uint64_t buckets_overlapped = 0;  // launched while the backward pass had layers to go
  // Bytes of buckets whose reduce-scatter had completed by the time the
  // backward pass ended: communication hidden behind compute.
  uint64_t reduce_scatter_hidden_bytes = 0;
  uint64_t buckets = 0;
  GradSyncStats& operator+=(const GradSyncStats& o) {
    exposed_seconds += o.exposed_seconds;
    all_gather_seconds += o.all_gather_seconds;
    reduce_scatter_bytes += o.reduce_scatter_bytes;
    all_gather_bytes += o.all_gather_bytes;
    buckets_overlapped += o.buckets_overlapped;
    reduce_scatter_hidden_bytes += o.reduce_scatter_hidden_bytes;
    buckets += o.buckets;
    return *this;
  }
};

// A range of the flat buffers, padded to a multiple of its group's size,
// whose gradients are summed and whose state is sharded over `group` (a
// group of one: nobody else holds it).
struct ShardRegion {
  FlatRange range;
  ProcessGroup group;
};

template <typename T>
class GradSync {
 public:
  // regions: ascending and back to back from 0; tp_partial: flat ranges
  // whose gradients are partial over TP.
  GradSync(Backend<T>& be, std::vector<ShardRegion> regions, std::vector<FlatRange> tp_partial,
           const ProcessGroup& tp, size_t bucket_elems);
  // One region of `padded` elements (padded_size(n, DP)) over dp.
  GradSync(Backend<T>& be, size_t padded, std::vector<FlatRange> tp_partial, const ProcessGroup& tp,
           const ProcessGroup& dp, size_t bucket_elems)
      : GradSync(be, {{{0, padded}, dp}}, std::move(tp_partial), tp, bucket_elems) {}

  // Before a step's backward passes.
  void start_step();
  // The gradients from `from` to the end of the region holding it are final
  // for this step: reduce their TP-partial parts and launch every bucket of
  // the region lying wholly in that range.
  void ready_from(T* grads, size_t from);
  // Every gradient is final: launch what is left and wait for all of it.
  // Afterwards shard_grads(grads) holds this rank's summed shard.
  void finish(T* grads);

  // The step's gradients of the shard, [shard_size()]: grads itself when no
  // region is shared (the shard is everything).
  T* shard_grads(T* grads) { return sharded_ ? shard_grads_.data() : grads; }
  bool sharded() const { return sharded_; }  // the shard packed apart (some region is shared)
  const std::vector<FlatRange>& shard() const { return shard_; }
  size_t shard_size() const { return shard_size_; }
  const std::vector<FlatRange>& buckets() const { return buckets_; }

  // flat: a padded buffer where this rank's shard ranges are up to date;
  // afterwards every rank's are (the updated parameters, in T or bf16, or
  // optimizer state being saved). Blocking.
  template <typename E>
  void all_gather(E* flat);
  // Between shard-packed [shard_size()] and flat [padded] layouts.
  void flat_to_shard(const T* flat, T* shard) const;
  void shard_to_flat(const T* shard, T* flat) const;

  GradSyncStats stats;  // accumulated; the caller resets it

 private:
  // A region as GradSync works on it.
  struct Region {
    FlatRange range;
    Communicator* group;    // null when nobody else holds it
    int first_bucket = 0;   // its buckets: [first_bucket, end_bucket) of buckets_
    int end_bucket = 0;
    size_t ready = 0;       // gradients at [ready, range.end) are final
    int next_bucket = -1;   // its highest bucket not launched yet
  };
  void launch_buckets_from(Region& region, T* grads, size_t from);

  Backend<T>& be_;
  std::vector<Region> regions_;
  std::vector<FlatRange> tp_partial_;  // ascending
  ProcessGroup tp_;
  bool sharded_ = false;                 // some region is shared: the shard is packed apart
  std::vector<FlatRange> buckets_, shard_;
  std::vector<Communicator*> bucket_group_;  // each bucket's region's group
  std::vector<size_t> shard_offset_;  // where each bucket's part starts in the shard
  size_t shard_size_ = 0;
  DeviceBuffer<T> shard_grads_;  // [shard_size] when sharded
  struct InFlight {
    Request request;
    uint64_t bytes;
    Communicator* group;
  };
  std::vector<InFlight> in_flight_;
  bool in_backward_ = false;
};

extern template class GradSync<float>;
extern template class GradSync<double>;
extern template class GradSync<bf16>;
extern template void GradSync<float>::all_gather<float>(float*);
extern template void GradSync<float>::all_gather<bf16>(bf16*);
extern template void GradSync<double>::all_gather<double>(double*);

}  // namespace mt
