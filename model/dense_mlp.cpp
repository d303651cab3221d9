#include "model/dense_mlp.h"

namespace mt {

template <typename T>
MlpActs<T>::MlpActs(Backend<T>& be, const ModelConfig& cfg, size_t rows)
    : u(be, rows * cfg.ffn_hidden_size), g(be, rows * cfg.ffn_hidden_size) {}

template <typename T>
MlpScratch<T>::MlpScratch(Backend<T>& be, const ModelConfig& cfg, size_t rows)
    : dg(be, rows * cfg.ffn_hidden_size), du(be, rows * cfg.ffn_hidden_size) {}

template <typename T>
void mlp_forward(Backend<T>& be, const ProcessGroup& tp, const ModelConfig& cfg, const MlpWeights<T>& w,
                 MlpActs<T>& a, const T* m, T* out, int tokens) {
  const int d = cfg.hidden_size, F = cfg.ffn_hidden_size;
  be.gemm(Trans::N, Trans::T, tokens, F, d, T(1), m, d, w.w1, d, T(0), a.u.data(), F);
  be.gelu_forward(a.g.data(), a.u.data(), size_t(tokens) * F);
  be.gemm(Trans::N, Trans::T, tokens, d, F, T(1), a.g.data(), F, w.w2, F, T(0), out, d);
  tp.all_reduce_sum(out, size_t(tokens) * d);
}

template <typename T>
void mlp_backward(Backend<T>& be, const ProcessGroup& tp, const ModelConfig& cfg, const MlpWeights<T>& w,
                  const MlpWeights<acc_t<T>>& dw, const MlpActs<T>& a, MlpScratch<T>& s, const T* m, const T* dout,
                  T* dm, int tokens) {
  using Acc = acc_t<T>;
  const int d = cfg.hidden_size, F = cfg.ffn_hidden_size;
  // dg = dout w2;  dw2 += dout^T g;  du = dg * gelu'(u);  dw1 += du^T m;  dm = du w1
  be.gemm(Trans::N, Trans::N, tokens, F, d, T(1), dout, d, w.w2, F, T(0), s.dg.data(), F);
  be.gemm_acc(Trans::T, Trans::N, d, F, tokens, Acc(1), dout, d, a.g.data(), F, Acc(1), dw.w2, F);
  be.gelu_backward(s.du.data(), s.dg.data(), a.u.data(), size_t(tokens) * F);
  be.gemm_acc(Trans::T, Trans::N, F, d, tokens, Acc(1), s.du.data(), F, m, d, Acc(1), dw.w1, d);
  be.gemm(Trans::N, Trans::N, tokens, d, F, T(1), s.du.data(), F, w.w1, d, T(0), dm, d);
  tp.all_reduce_sum(dm, size_t(tokens) * d);
}

#define MT_INSTANTIATE_MLP(T)                                                                                    \
  template struct MlpActs<T>;                                                                                   \
  template struct MlpScratch<T>;                                                                                \
  template void mlp_forward<T>(Backend<T>&, const ProcessGroup&, const ModelConfig&, const MlpWeights<T>&,      \
                               MlpActs<T>&, const T*, T*, int);                                                \
  template void mlp_backward<T>(Backend<T>&, const ProcessGroup&, const ModelConfig&, const MlpWeights<T>&,     \
                                const MlpWeights<acc_t<T>>&, const MlpActs<T>&, MlpScratch<T>&, const T*,       \
                                const T*, T*, int);
MT_INSTANTIATE_MLP(float)
MT_INSTANTIATE_MLP(double)
MT_INSTANTIATE_MLP(bf16)

}  // namespace mt
