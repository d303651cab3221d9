#include "model/dense_mlp.h"

namespace mt {

template <typename T>
MlpActs<T>::MlpActs(Backend<T>& be, const MlpShape& s, size_t rows) : u(be, rows * s.F), g(be, rows * s.F) {
  if (s.swiglu) u3 = DeviceBuffer<T>(be, rows * s.F);
}

template <typename T>
MlpScratch<T>::MlpScratch(Backend<T>& be, const MlpShape& s, size_t rows) : dg(be, rows * s.F), du(be, rows * s.F) {
  if (s.swiglu) du3 = DeviceBuffer<T>(be, rows * s.F);
}

template <typename T>
void activation_forward(Backend<T>& be, const MlpShape& s, MlpActs<T>& a, size_t n) {
  if (s.swiglu)
    be.swiglu_forward(a.g.data(), a.u.data(), a.u3.data(), n);
  else
    be.gelu_forward(a.g.data(), a.u.data(), n);
}

template <typename T>
void activation_backward(Backend<T>& be, const MlpShape& s, const MlpActs<T>& a, MlpScratch<T>& g, size_t n) {
  if (s.swiglu)
    be.swiglu_backward(g.du.data(), g.du3.data(), g.dg.data(), a.u.data(), a.u3.data(), n);
  else
    be.gelu_backward(g.du.data(), g.dg.data(), a.u.data(), n);
}

template <typename T>
void mlp_forward(Backend<T>& be, const MlpShape& s, const MlpWeights<T>& w, MlpActs<T>& a,
                 const T* m, T* out, int tokens) {
  const int d = s.d, F = s.F;
  be.gemm(Trans::N, Trans::T, tokens, F, d, T(1), m, d, w.w1, d, T(0), a.u.data(), F);
  if (s.swiglu) be.gemm(Trans::N, Trans::T, tokens, F, d, T(1), m, d, w.w3, d, T(0), a.u3.data(), F);
  activation_forward(be, s, a, size_t(tokens) * F);
  be.gemm(Trans::N, Trans::T, tokens, d, F, T(1), a.g.data(), F, w.w2, F, T(0), out, d);
}

template <typename T>
void mlp_backward(Backend<T>& be, const MlpShape& s, const MlpWeights<T>& w,
                  const MlpWeights<acc_t<T>>& dw, const MlpActs<T>& a, MlpScratch<T>& g, const T* m, const T* dout,
                  T* dm, int tokens) {
  using Acc = acc_t<T>;
  const int d = s.d, F = s.F;
  // dg = dout w2;  dw2 += dout^T g;  du = dg * act'(u);  dw1 += du^T m;  dm = du w1
  // (SwiGLU: du, du3 from dg;  dw3 += du3^T m;  dm += du3 w3)
  be.gemm(Trans::N, Trans::N, tokens, F, d, T(1), dout, d, w.w2, F, T(0), g.dg.data(), F);
  be.gemm_acc(Trans::T, Trans::N, d, F, tokens, Acc(1), dout, d, a.g.data(), F, Acc(1), dw.w2, F);
  activation_backward(be, s, a, g, size_t(tokens) * F);
  be.gemm_acc(Trans::T, Trans::N, F, d, tokens, Acc(1), g.du.data(), F, m, d, Acc(1), dw.w1, d);
  if (s.swiglu) be.gemm_acc(Trans::T, Trans::N, F, d, tokens, Acc(1), g.du3.data(), F, m, d, Acc(1), dw.w3, d);
  be.gemm(Trans::N, Trans::N, tokens, d, F, T(1), g.du.data(), F, w.w1, d, T(0), dm, d);
  if (s.swiglu) be.gemm(Trans::N, Trans::N, tokens, d, F, T(1), g.du3.data(), F, w.w3, d, T(1), dm, d);
}

#define MT_INSTANTIATE_MLP(T)                                                                                        \
  template struct MlpActs<T>;                                                                                        \
  template struct MlpScratch<T>;                                                                                     \
  template void activation_forward<T>(Backend<T>&, const MlpShape&, MlpActs<T>&, size_t);                            \
  template void activation_backward<T>(Backend<T>&, const MlpShape&, const MlpActs<T>&, MlpScratch<T>&, size_t);     \
  template void mlp_forward<T>(Backend<T>&, const MlpShape&, const MlpWeights<T>&,                                   \
                               MlpActs<T>&, const T*, T*, int);                                                      \
  template void mlp_backward<T>(Backend<T>&, const MlpShape&, const MlpWeights<T>&,                                  \
                                const MlpWeights<acc_t<T>>&, const MlpActs<T>&, MlpScratch<T>&, const T*,            \
                                const T*, T*, int);
MT_INSTANTIATE_MLP(float)
MT_INSTANTIATE_MLP(double)
MT_INSTANTIATE_MLP(bf16)

}  // namespace mt
