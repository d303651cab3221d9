#include "parallel/expert_dispatch.h"

namespace mt {

template <typename T>
void LocalExpertDispatch<T>::dispatch(const PackedRows<T>& p, const T* m, T* x, int d) {
  be_.gather_rows(x, m, p.token, p.rows(), d);
}

// One expert at a time: a token appears at most once in an expert's rows,
// so the scatter has no two rows adding into one token at once.
template <typename T>
void LocalExpertDispatch<T>::combine(const PackedRows<T>& p, const T* y, T* out, int d) {
  const std::vector<int32_t>& offset = *p.expert_offset;
  for (size_t e = 0; e + 1 < offset.size(); ++e) {
    const int row0 = offset[e], n = offset[e + 1] - row0;
    if (n > 0) be_.scatter_add_rows(out, y + size_t(row0) * d, p.token + row0, p.weight + row0, n, d);
  }
}

template <typename T>
void LocalExpertDispatch<T>::combine_backward(const PackedRows<T>& p, const T* dout, const T* y, T* dy,
                                              acc_t<T>* dweight, int d) {
  be_.gather_rows(dy, dout, p.token, p.rows(), d);
  be_.row_dot(dweight, dy, y, p.rows(), d);
  be_.scale_rows(dy, p.weight, p.rows(), d);
}

template <typename T>
void LocalExpertDispatch<T>::dispatch_backward(const PackedRows<T>& p, const T* dx, T* dm, int d) {
  const std::vector<int32_t>& offset = *p.expert_offset;
  for (size_t e = 0; e + 1 < offset.size(); ++e) {
    const int row0 = offset[e], n = offset[e + 1] - row0;
    if (n > 0) be_.scatter_add_rows(dm, dx + size_t(row0) * d, p.token + row0, nullptr, n, d);
  }
}

template class LocalExpertDispatch<float>;
template class LocalExpertDispatch<double>;
template class LocalExpertDispatch<bf16>;

}  // namespace mt
