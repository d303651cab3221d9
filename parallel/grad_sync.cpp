#include "parallel/grad_sync.h"

#include <mpi.h>

#include <algorithm>

#include "runtime/check.h"

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
GradSync<T>::GradSync(Backend<T>& be, size_t padded, std::vector<FlatRange> tp_partial,
                      const TensorParallel& tp, Communicator* dp, size_t bucket_elems)
    : be_(be), padded_(padded), tp_partial_(std::move(tp_partial)), tp_(tp),
      dp_(dp && dp->size() > 1 ? dp : nullptr) {
  const int dp_size = dp_ ? dp_->size() : 1;
  buckets_ = grad_buckets(padded_, dp_size, dp_ ? bucket_elems : padded_ + 1);
  shard_ = shard_ranges(buckets_, dp_size, dp_ ? dp_->rank() : 0);
  for (const FlatRange& r : shard_) {
    shard_offset_.push_back(shard_size_);
    shard_size_ += r.size();
  }
  if (dp_) shard_grads_ = DeviceBuffer<T>(be, shard_size_);
  std::sort(tp_partial_.begin(), tp_partial_.end(),
            [](const FlatRange& a, const FlatRange& b) { return a.begin < b.begin; });
  start_step();
}

template <typename T>
void GradSync<T>::start_step() {
  MT_CHECK(in_flight_.empty(), "a step started with {} gradient buckets still in flight", in_flight_.size());
  ready_ = padded_;
  next_bucket_ = int(buckets_.size()) - 1;
  in_backward_ = true;
}

template <typename T>
void GradSync<T>::ready_from(T* grads, size_t from) {
  if (from >= ready_) return;
  // TP first: a bucket must carry the summed gradients.
  for (const FlatRange& r : tp_partial_)
    if (r.begin >= from && r.begin < ready_) tp_.all_reduce_sum(grads + r.begin, r.size());
  ready_ = from;
  launch_buckets_from(grads, from);
  for (InFlight& f : in_flight_) dp_->test(f.request);  // let the earlier buckets progress
}

template <typename T>
void GradSync<T>::launch_buckets_from(T* grads, size_t from) {
  if (!dp_) return;
  for (; next_bucket_ >= 0 && buckets_[next_bucket_].begin >= from; --next_bucket_) {
    const FlatRange& b = buckets_[next_bucket_];
    const FlatRange& mine = shard_[next_bucket_];
    in_flight_.push_back({dp_->ireduce_scatter(grads + b.begin, shard_grads_.data() + shard_offset_[next_bucket_],
                                               mine.size(), dtype_of<T>()),
                          b.size() * sizeof(T)});
    stats.reduce_scatter_bytes += b.size() * sizeof(T);
    stats.buckets += 1;
    if (in_backward_ && from > 0) stats.buckets_overlapped += 1;
  }
}

template <typename T>
void GradSync<T>::finish(T* grads) {
  in_backward_ = false;
  ready_from(grads, 0);
  for (InFlight& f : in_flight_)
    if (dp_->test(f.request)) stats.reduce_scatter_hidden_bytes += f.bytes;
  const double start = MPI_Wtime();
  for (InFlight& f : in_flight_) dp_->wait(f.request);
  stats.exposed_seconds += MPI_Wtime() - start;
  in_flight_.clear();
}

template <typename T>
template <typename E>
void GradSync<T>::all_gather(E* flat) {
  if (!dp_) return;
  // Blocking calls: nothing is left to overlap with once the step is done,
  // and MPI's blocking all-gather is faster than its non-blocking one.
  const double start = MPI_Wtime();
  for (size_t i = 0; i < buckets_.size(); ++i) {
    dp_->all_gather(flat + buckets_[i].begin, shard_[i].size(), dtype_of<E>());
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
template void GradSync<float>::all_gather<float>(float*);
template void GradSync<float>::all_gather<bf16>(bf16*);
template void GradSync<double>::all_gather<double>(double*);

}  // namespace mt
