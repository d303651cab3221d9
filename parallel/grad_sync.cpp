#include "parallel/grad_sync.h"

#include <fmt/format.h>
#include <mpi.h>

#include <algorithm>

#include "runtime/check.h"
#include "runtime/watchdog.h"

namespace mt {

size_t padded_size(size_t n, int dp) { return (n + size_t(dp) - 1) / size_t(dp) * size_t(dp); }

std::vector<FlatRange> grad_buckets(size_t padded, int dp, size_t bucket_elems) {
  MT_CHECK(padded % size_t(dp) == 0, "a buffer of {} elements is not padded for DP={}", padded, dp);
  MT_CHECK(bucket_elems > 0, "--ddp-bucket-size must be positive");
  const size_t size = padded_size(bucket_elems, dp);
  std::vector<FlatRange> buckets;
  for (size_t end = padded; end > 0;) {
    const size_t begin = end > size ? end - size : 0;
    buckets.push_back({begin, end});
    end = begin;
  }
  std::reverse(buckets.begin(), buckets.end());
  return buckets;
}

std::vector<FlatRange> shard_ranges(const std::vector<FlatRange>& buckets, int dp, int dp_rank) {
  std::vector<FlatRange> shard;
  for (const FlatRange& b : buckets) {
    const size_t part = b.size() / size_t(dp);
    shard.push_back({b.begin + size_t(dp_rank) * part, b.begin + size_t(dp_rank + 1) * part});
  }
  return shard;
}

template <typename T>
GradSync<T>::GradSync(Backend<T>& be, std::vector<ShardRegion> regions, std::vector<FlatRange> tp_partial,
                      const ProcessGroup& tp, size_t bucket_elems)
    : be_(be), tp_partial_(std::move(tp_partial)), tp_(tp) {
  size_t at = 0;
  for (const ShardRegion& r : regions) {
    MT_CHECK(r.range.begin == at, "gradient regions must lie back to back from 0: one starts at {}, not {}",
             r.range.begin, at);
    at = r.range.end;
    Communicator* group = r.group.size > 1 ? r.group.comm : nullptr;
    const int size = group ? group->size() : 1;
    Region region{r.range, group, int(buckets_.size())};
    for (FlatRange b : grad_buckets(r.range.size(), size, group ? bucket_elems : r.range.size() + 1)) {
      const FlatRange bucket{b.begin + r.range.begin, b.end + r.range.begin};
      buckets_.push_back(bucket);
      bucket_group_.push_back(group);
      shard_.push_back(shard_ranges({bucket}, size, group ? group->rank() : 0)[0]);
      shard_offset_.push_back(shard_size_);
      shard_size_ += shard_.back().size();
    }
    region.end_bucket = int(buckets_.size());
    sharded_ = sharded_ || group != nullptr;
    regions_.push_back(region);
  }
  if (sharded_) shard_grads_ = DeviceBuffer<T>(be, shard_size_);
  std::sort(tp_partial_.begin(), tp_partial_.end(),
            [](const FlatRange& a, const FlatRange& b) { return a.begin < b.begin; });
  start_step();
}

template <typename T>
void GradSync<T>::start_step() {
  MT_CHECK(in_flight_.empty(), "a step started with {} gradient buckets still in flight", in_flight_.size());
  for (Region& r : regions_) {
    r.ready = r.range.end;
    r.next_bucket = r.end_bucket - 1;
  }
  in_backward_ = true;
}

template <typename T>
void GradSync<T>::ready_from(T* grads, size_t from) {
  for (Region& r : regions_) {
    if (from < r.range.begin || from >= r.range.end || from >= r.ready) continue;
    // TP first: a bucket must carry the summed gradients.
    for (const FlatRange& p : tp_partial_)
      if (p.begin >= from && p.begin < r.ready) tp_.all_reduce_sum(grads + p.begin, p.size());
    r.ready = from;
    launch_buckets_from(r, grads, from);
  }
  for (InFlight& f : in_flight_) f.group->test(f.request);  // let the earlier buckets progress
}

template <typename T>
void GradSync<T>::launch_buckets_from(Region& r, T* grads, size_t from) {
  if (!sharded_) return;
  for (; r.next_bucket >= r.first_bucket && buckets_[r.next_bucket].begin >= from; --r.next_bucket) {
    const int i = r.next_bucket;
    const FlatRange& b = buckets_[i];
    T* shard = shard_grads_.data() + shard_offset_[i];
    if (!r.group) {  // nobody else holds it: the sum is the rank's own
      be_.copy(shard, grads + b.begin, b.size());
      continue;
    }
    in_flight_.push_back({r.group->ireduce_scatter(grads + b.begin, shard, shard_[i].size(), dtype_of<T>()),
                          b.size() * sizeof(T), r.group});
    stats.reduce_scatter_bytes += b.size() * sizeof(T);
    stats.buckets += 1;
    if (in_backward_ && from > r.range.begin) stats.buckets_overlapped += 1;
  }
}

template <typename T>
void GradSync<T>::finish(T* grads) {
  in_backward_ = false;
  for (const Region& r : regions_) ready_from(grads, r.range.begin);
  for (InFlight& f : in_flight_)
    if (f.group->test(f.request)) stats.reduce_scatter_hidden_bytes += f.bytes;
  const double start = MPI_Wtime();
  for (size_t i = 0; i < in_flight_.size(); ++i) {
    const WaitingFor waiting(fmt::format("the ZeRO-1 reduce-scatter of gradient bucket {} of {} in {}", i + 1,
                                         in_flight_.size(), in_flight_[i].group->name()));
    in_flight_[i].group->wait(in_flight_[i].request);
  }
  stats.exposed_seconds += MPI_Wtime() - start;
  in_flight_.clear();
}

template <typename T>
template <typename E>
void GradSync<T>::all_gather(E* flat) {
  // Blocking calls: nothing is left to overlap with once the step is done,
  // and MPI's blocking all-gather is faster than its non-blocking one.
  const double start = MPI_Wtime();
  for (size_t i = 0; i < buckets_.size(); ++i) {
    if (!bucket_group_[i]) continue;
    bucket_group_[i]->all_gather(flat + buckets_[i].begin, shard_[i].size(), dtype_of<E>());
    stats.all_gather_bytes += buckets_[i].size() * sizeof(E);
  }
  stats.all_gather_seconds += MPI_Wtime() - start;
}

template <typename T>
void GradSync<T>::flat_to_shard(const T* flat, T* shard) const {
  for (const FlatRange& r : shard_) {
    be_.copy(shard, flat + r.begin, r.size());
    shard += r.size();
  }
}

template <typename T>
void GradSync<T>::shard_to_flat(const T* shard, T* flat) const {
  for (const FlatRange& r : shard_) {
    be_.copy(flat + r.begin, shard, r.size());
    shard += r.size();
  }
}

template class GradSync<float>;
template class GradSync<double>;
template class GradSync<bf16>;
template void GradSync<float>::all_gather<float>(float*);
template void GradSync<float>::all_gather<bf16>(bf16*);
template void GradSync<double>::all_gather<double>(double*);

}  // namespace mt
