#include "parallel/tensor_parallel.h"

#include "runtime/check.h"

namespace mt {

Block shard_block(const std::vector<int64_t>& shape, const Shard& shard) {
  Block b{std::vector<int64_t>(shape.size(), 0), shape};
  if (!shard.split()) return b;
  MT_CHECK(shard.dim < int(shape.size()) && shape[shard.dim] % shard.parts == 0,
           "dimension {} of extent {} does not split into {} parts", shard.dim,
           shard.dim < int(shape.size()) ? shape[shard.dim] : -1, shard.parts);
  b.count[shard.dim] = shape[shard.dim] / shard.parts;
  b.offset[shard.dim] = b.count[shard.dim] * shard.index;
  return b;
}

template <typename T>
const T* gather_rows(Backend<T>& be, const ProcessGroup& tp, bool split, const T* local, T* whole, size_t n,
                     size_t width) {
  if (!split || tp.size == 1) return local;
  const size_t mine = n / size_t(tp.size) * width;
  be.copy(whole + size_t(tp.rank) * mine, local, mine);
  tp.comm->all_gather(whole, mine, dtype_of<T>());
  return whole;
}

template <typename T>
void reduce_scatter_rows(const ProcessGroup& tp, bool split, T* partial, T* local, size_t n, size_t width) {
  if (!split || tp.size == 1) {
    tp.all_reduce_sum(partial, n * width);
    MT_CHECK(partial == local, "an all-reduce of rows is in place");
    return;
  }
  tp.comm->reduce_scatter(partial, local, n / size_t(tp.size) * width, dtype_of<T>());
}

template <typename T>
void vocab_parallel_cross_entropy(Backend<T>& be, const ProcessGroup& tp, acc_t<T>* losses,
                                  const acc_t<T>* logits, const int32_t* targets, int n, int v,
                                  int vocab_start, acc_t<T>* stats) {
  acc_t<T>* row_max = stats;       // [n]
  acc_t<T>* partials = stats + n;  // [n, 2]: sum of exp(logit - max), target logit
  be.acc().row_max(row_max, logits, n, v);
  tp.all_reduce_max(row_max, size_t(n));
  be.acc().ce_partials(partials, logits, row_max, targets, n, v, vocab_start);
  tp.all_reduce_sum(partials, size_t(2) * n);
  be.ce_finish(losses, nullptr, logits, row_max, partials, targets, n, v, vocab_start, 0.0);
}

template <typename T>
void vocab_parallel_cross_entropy_grad(Backend<T>& be, T* dlogits, const acc_t<T>* logits,
                                       const int32_t* targets, int n, int v, int vocab_start,
                                       double dscale, const acc_t<T>* stats) {
  be.ce_finish(nullptr, dlogits, logits, stats, stats + n, targets, n, v, vocab_start, dscale);
}

#define MT_INSTANTIATE_VOCAB_PARALLEL_CE(T)                                                           \
  template void vocab_parallel_cross_entropy<T>(Backend<T>&, const ProcessGroup&, acc_t<T>*,       \
                                                const acc_t<T>*, const int32_t*, int, int, int,      \
                                                acc_t<T>*);                                          \
  template void vocab_parallel_cross_entropy_grad<T>(Backend<T>&, T*, const acc_t<T>*, const int32_t*, \
                                                     int, int, int, double, const acc_t<T>*);
#define MT_INSTANTIATE_SEQUENCE_ROWS(T)                                                                   \
  template const T* gather_rows<T>(Backend<T>&, const ProcessGroup&, bool, const T*, T*, size_t, size_t); \
  template void reduce_scatter_rows<T>(const ProcessGroup&, bool, T*, T*, size_t, size_t);
MT_INSTANTIATE_SEQUENCE_ROWS(float)
MT_INSTANTIATE_SEQUENCE_ROWS(double)
MT_INSTANTIATE_SEQUENCE_ROWS(bf16)
MT_INSTANTIATE_VOCAB_PARALLEL_CE(float)
MT_INSTANTIATE_VOCAB_PARALLEL_CE(double)
MT_INSTANTIATE_VOCAB_PARALLEL_CE(bf16)

}  // namespace mt
