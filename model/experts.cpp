#include "model/experts.h"

namespace mt {

namespace {

// A local expert with rows: e, and its rows [row0, row0 + n).
struct ExpertRows {
  size_t e, row0;
  int n;
};
std::vector<ExpertRows> experts_with_rows(const std::vector<int32_t>& offset) {
  std::vector<ExpertRows> experts;
  for (size_t e = 0; e + 1 < offset.size(); ++e) {
    const int n = offset[e + 1] - offset[e];
    if (n > 0) experts.push_back({e, size_t(offset[e]), n});
  }
  return experts;
}

}  // namespace

template <typename T>
void experts_forward(Backend<T>& be, const ModelConfig& cfg, const ExpertWeights<T>& w, ExpertActs<T>& a,
                     const std::vector<int32_t>& offset) {
  const int d = cfg.hidden_size, F = cfg.ffn_hidden_size;
  T *u = a.mlp.u.data(), *g = a.mlp.g.data();
  std::vector<GroupMember<T, T>> up, down;
  for (const ExpertRows& x : experts_with_rows(offset)) {
    up.push_back({x.n, d, a.x.data() + x.row0 * d, w.w1 + x.e * F * d, u + x.row0 * F});
    down.push_back({x.n, F, g + x.row0 * F, w.w2 + x.e * d * F, a.y.data() + x.row0 * d});
  }
  be.gemm_grouped(Trans::N, Trans::T, F, T(1), d, d, T(0), F, up);  // u = x w1^T
  be.gelu_forward(g, u, size_t(offset.back()) * F);
  be.gemm_grouped(Trans::N, Trans::T, d, T(1), F, F, T(0), d, down);  // y = g w2^T
}

template <typename T>
void experts_backward(Backend<T>& be, const ModelConfig& cfg, const ExpertWeights<T>& w,
                      const ExpertWeights<acc_t<T>>& dw, const ExpertActs<T>& a, ExpertScratch<T>& s,
                      const std::vector<int32_t>& offset) {
  using Acc = acc_t<T>;
  const int d = cfg.hidden_size, F = cfg.ffn_hidden_size;
  // dw2 += dy^T g;  dg = dy w2;  du = dg * gelu'(u);  dw1 += du^T x;  dx = du w1
  T *dg = s.mlp.dg.data(), *du = s.mlp.du.data();
  std::vector<GroupMember<T, Acc>> dw2_of, dw1_of;
  std::vector<GroupMember<T, T>> dg_of, dx_of;
  for (const ExpertRows& x : experts_with_rows(offset)) {
    const T* dy = s.dy.data() + x.row0 * d;
    dw2_of.push_back({d, x.n, dy, a.mlp.g.data() + x.row0 * F, dw.w2 + x.e * d * F});
    dg_of.push_back({x.n, d, dy, w.w2 + x.e * d * F, dg + x.row0 * F});
    dw1_of.push_back({F, x.n, du + x.row0 * F, a.x.data() + x.row0 * d, dw.w1 + x.e * F * d});
    dx_of.push_back({x.n, F, du + x.row0 * F, w.w1 + x.e * F * d, s.dx.data() + x.row0 * d});
  }
  be.gemm_acc_grouped(Trans::T, Trans::N, F, Acc(1), d, F, Acc(1), F, dw2_of);
  be.gemm_grouped(Trans::N, Trans::N, F, T(1), d, F, T(0), F, dg_of);
  be.gelu_backward(du, dg, a.mlp.u.data(), size_t(offset.back()) * F);
  be.gemm_acc_grouped(Trans::T, Trans::N, d, Acc(1), F, d, Acc(1), d, dw1_of);
  be.gemm_grouped(Trans::N, Trans::N, d, T(1), F, d, T(0), d, dx_of);
}

#define MT_INSTANTIATE_EXPERTS(T)                                                                               \
  template void experts_forward<T>(Backend<T>&, const ModelConfig&, const ExpertWeights<T>&, ExpertActs<T>&,  \
                                   const std::vector<int32_t>&);                                              \
  template void experts_backward<T>(Backend<T>&, const ModelConfig&, const ExpertWeights<T>&,                 \
                                    const ExpertWeights<acc_t<T>>&, const ExpertActs<T>&, ExpertScratch<T>&,   \
                                    const std::vector<int32_t>&);
MT_INSTANTIATE_EXPERTS(float)
MT_INSTANTIATE_EXPERTS(double)
MT_INSTANTIATE_EXPERTS(bf16)

}  // namespace mt
