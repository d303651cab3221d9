#include "parallel/expert_dispatch.h"

#include <mpi.h>

#include "runtime/check.h"

namespace mt {

template <typename T>
ExpertDispatch<T>::ExpertDispatch(Backend<T>& be, int experts, size_t max_packed, size_t max_rows, int d,
                                  const ProcessGroup& ep)
    : be_(be), experts_(experts), local_experts_(experts / ep.size), d_(d), ep_(ep) {
  MT_CHECK(ep.size >= 1 && experts % ep.size == 0, "{} experts do not split over expert-parallel size {}", experts,
           ep.size);
  MT_CHECK(ep.size == 1 || ep.comm != nullptr, "expert parallelism over {} ranks needs its group", ep.size);
  if (!sends()) return;
  packed_ = DeviceBuffer<T>(be, max_packed * size_t(d));
  staged_ = DeviceBuffer<T>(be, max_rows * size_t(d));
}

template <typename T>
ExpertExchange ExpertDispatch<T>::exchange(const PackedRows<T>& p) {
  const std::vector<int32_t>& offset = *p.expert_offset;
  const int El = local_experts_, EP = ep_.size;
  ExpertExchange ex;
  ex.send_rows.assign(EP, 0);
  ex.recv_rows.assign(EP, 0);
  std::vector<int32_t> counts(experts_);
  for (int e = 0; e < experts_; ++e) {
    counts[e] = offset[e + 1] - offset[e];
    ex.send_rows[e / El] += counts[e];
  }
  if (sends()) {
    ex.recv_counts.resize(size_t(EP) * El);
    const std::vector<int> one(EP, 1);
    ep_.comm->all_to_all_rows(counts.data(), one.data(), ex.recv_counts.data(), one.data(), size_t(El), DType::I32);
    stats.bytes_sent += uint64_t(EP - 1) * El * sizeof(int32_t);
  } else {
    ex.recv_counts = counts;
  }
  ex.expert_offset.assign(El + 1, 0);
  for (int e = 0; e < El; ++e) {
    int rows = 0;
    for (int q = 0; q < EP; ++q) rows += ex.recv_counts[size_t(q) * El + e];
    ex.expert_offset[e + 1] = ex.expert_offset[e] + rows;
  }
  for (int q = 0; q < EP; ++q)
    for (int e = 0; e < El; ++e) ex.recv_rows[q] += ex.recv_counts[size_t(q) * El + e];
  MT_CHECK(!sends() || size_t(ex.rows()) * d_ <= staged_.size(),
           "the experts of EP rank {} received {} rows, more than the {} they were sized for", ep_.rank, ex.rows(),
           staged_.size() / size_t(d_));
  return ex;
}

template <typename T>
void ExpertDispatch<T>::all_to_all(const T* send, const std::vector<int>& send_rows, T* recv,
                                   const std::vector<int>& recv_rows) {
  const double start = MPI_Wtime();
  ep_.comm->all_to_all_rows(send, send_rows.data(), recv, recv_rows.data(), size_t(d_), dtype_of<T>());
  stats.seconds += MPI_Wtime() - start;
  stats.calls += 1;
  for (int q = 0; q < ep_.size; ++q)
    if (q != ep_.rank) stats.bytes_sent += uint64_t(send_rows[q]) * d_ * sizeof(T);
}

template <typename T>
void ExpertDispatch<T>::regroup(const ExpertExchange& ex, const T* from, T* to, bool to_expert_major) {
  const int El = local_experts_, EP = ep_.size;
  std::vector<int32_t> at(ex.expert_offset.begin(), ex.expert_offset.end() - 1);  // next row of each local expert
  size_t source_row = 0;
  for (int q = 0; q < EP; ++q)
    for (int e = 0; e < El; ++e) {
      const size_t n = size_t(ex.recv_counts[size_t(q) * El + e]) * d_;
      const size_t expert_row = size_t(at[e]);
      if (to_expert_major) {
        be_.copy(to + expert_row * d_, from + source_row * d_, n);
      } else {
        be_.copy(to + source_row * d_, from + expert_row * d_, n);
      }
      at[e] += ex.recv_counts[size_t(q) * El + e];
      source_row += size_t(ex.recv_counts[size_t(q) * El + e]);
    }
}

template <typename T>
void ExpertDispatch<T>::to_experts(const ExpertExchange& ex, const T* packed, T* rows) {
  all_to_all(packed, ex.send_rows, staged_.data(), ex.recv_rows);
  regroup(ex, staged_.data(), rows, true);
}

template <typename T>
void ExpertDispatch<T>::to_origin(const ExpertExchange& ex, const T* rows, T* packed) {
  regroup(ex, rows, staged_.data(), false);
  all_to_all(staged_.data(), ex.recv_rows, packed, ex.send_rows);
}

// One expert at a time: a token appears at most once in an expert's rows,
// so the scatter has no two rows adding into one token at once.
template <typename T>
void ExpertDispatch<T>::scatter_by_expert(const PackedRows<T>& p, const T* rows, const acc_t<T>* weight, T* out) {
  const std::vector<int32_t>& offset = *p.expert_offset;
  for (size_t e = 0; e + 1 < offset.size(); ++e) {
    const int row0 = offset[e], n = offset[e + 1] - row0;
    if (n > 0) be_.scatter_add_rows(out, rows + size_t(row0) * d_, p.token + row0, weight ? weight + row0 : nullptr, n, d_);
  }
}

template <typename T>
void ExpertDispatch<T>::dispatch(const PackedRows<T>& p, const ExpertExchange& ex, const T* m, T* x) {
  if (!sends()) {
    be_.gather_rows(x, m, p.token, p.rows(), d_);
    return;
  }
  be_.gather_rows(packed_.data(), m, p.token, p.rows(), d_);
  to_experts(ex, packed_.data(), x);
}

template <typename T>
void ExpertDispatch<T>::combine(const PackedRows<T>& p, const ExpertExchange& ex, const T* y, T* returned, T* out) {
  if (sends()) to_origin(ex, y, returned);
  scatter_by_expert(p, sends() ? returned : y, p.weight, out);
}

template <typename T>
void ExpertDispatch<T>::combine_backward(const PackedRows<T>& p, const ExpertExchange& ex, const T* dout,
                                         const T* returned, T* dy, acc_t<T>* dweight) {
  T* packed = sends() ? packed_.data() : dy;
  be_.gather_rows(packed, dout, p.token, p.rows(), d_);
  be_.row_dot(dweight, packed, returned, p.rows(), d_);
  be_.scale_rows(packed, p.weight, p.rows(), d_);
  if (sends()) to_experts(ex, packed, dy);
}

template <typename T>
void ExpertDispatch<T>::dispatch_backward(const PackedRows<T>& p, const ExpertExchange& ex, const T* dx, T* dm) {
  if (sends()) to_origin(ex, dx, packed_.data());
  scatter_by_expert(p, sends() ? packed_.data() : dx, nullptr, dm);
}

template class ExpertDispatch<float>;
template class ExpertDispatch<double>;
template class ExpertDispatch<bf16>;

}  // namespace mt
