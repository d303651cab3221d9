// Expert dispatch: moving each kept (token, expert) assignment of a
// micro-batch to its expert's rows, and the experts' outputs back to their
// tokens, forward and backward. The FFN (model/feed_forward.h) runs the
// expert products on the packed rows in between. LocalExpertDispatch holds
// every expert on this rank; expert parallelism sends the rows over an
// all-to-all instead, behind the same interface.
#pragma once

#include <cstdint>
#include <vector>

#include "runtime/backend.h"

namespace mt {

// A micro-batch's kept assignments as rows grouped by expert (row order:
// expert, then token).
template <typename T>
struct PackedRows {
  const int32_t* token = nullptr;             // [rows] device: the token of each row
  const acc_t<T>* weight = nullptr;           // [rows] device: its routing weight (float32 under bf16)
  const std::vector<int32_t>* expert_offset;  // [E+1] host: expert e's rows [offset[e], offset[e+1])
  int rows() const { return expert_offset->back(); }
};

template <typename T>
class ExpertDispatch {
 public:
  virtual ~ExpertDispatch() = default;
  // x[row] = m[token[row]]: each row's input, [rows, d].
  virtual void dispatch(const PackedRows<T>& p, const T* m, T* x, int d) = 0;
  // out[token[row]] += weight[row] * y[row], out [T, d].
  virtual void combine(const PackedRows<T>& p, const T* y, T* out, int d) = 0;
  // Backward of combine: dweight[row] = dout[token[row]] . y[row] and
  // dy[row] = weight[row] * dout[token[row]].
  virtual void combine_backward(const PackedRows<T>& p, const T* dout, const T* y, T* dy, acc_t<T>* dweight,
                                int d) = 0;
  // Backward of dispatch: dm[token[row]] += dx[row].
  virtual void dispatch_backward(const PackedRows<T>& p, const T* dx, T* dm, int d) = 0;
};

template <typename T>
class LocalExpertDispatch final : public ExpertDispatch<T> {
 public:
  explicit LocalExpertDispatch(Backend<T>& be) : be_(be) {}
  void dispatch(const PackedRows<T>& p, const T* m, T* x, int d) override;
  void combine(const PackedRows<T>& p, const T* y, T* out, int d) override;
  void combine_backward(const PackedRows<T>& p, const T* dout, const T* y, T* dy, acc_t<T>* dweight,
                        int d) override;
  void dispatch_backward(const PackedRows<T>& p, const T* dx, T* dm, int d) override;

 private:
  Backend<T>& be_;
};

extern template class LocalExpertDispatch<float>;
extern template class LocalExpertDispatch<double>;
extern template class LocalExpertDispatch<bf16>;

}  // namespace mt
