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

// Each expert's rows of `rows` [R, F] times its weight w[e] ([F, d] rows,
// so the product runs Trans::T), into out [R, F'].
template <typename T, typename C>
std::vector<GroupMember<T, C>> per_expert(const std::vector<ExpertRows>& experts, int k, const T* rows, int ld_rows,
                                          const T* w, size_t w_size, C* out, int ld_out) {
  std::vector<GroupMember<T, C>> members;
  for (const ExpertRows& x : experts)
    members.push_back({x.n, k, rows + x.row0 * ld_rows, w + x.e * w_size, out + x.row0 * ld_out});
  return members;
}

}  // namespace

template <typename T>
void experts_forward(Backend<T>& be, const MlpShape& s, const ExpertWeights<T>& w, ExpertActs<T>& a,
                     const std::vector<int32_t>& offset) {
  const int d = s.d, F = s.F;
  const size_t weight = size_t(F) * d;
  const std::vector<ExpertRows> experts = experts_with_rows(offset);
  T *x = a.x.data(), *u = a.mlp.u.data(), *g = a.mlp.g.data();
  // u = x w1^T (and u3 = x w3^T);  g = act(u[, u3]);  y = g w2^T
  be.gemm_grouped(Trans::N, Trans::T, F, T(1), d, d, T(0), F, per_expert(experts, d, x, d, w.w1, weight, u, F));
  if (s.swiglu)
    be.gemm_grouped(Trans::N, Trans::T, F, T(1), d, d, T(0), F,
                    per_expert(experts, d, x, d, w.w3, weight, a.mlp.u3.data(), F));
  activation_forward(be, s, a.mlp, size_t(offset.back()) * F);
  be.gemm_grouped(Trans::N, Trans::T, d, T(1), F, F, T(0), d,
                  per_expert(experts, F, g, F, w.w2, weight, a.y.data(), d));
}

template <typename T>
void experts_backward(Backend<T>& be, const MlpShape& s, const ExpertWeights<T>& w,
                      const ExpertWeights<acc_t<T>>& dw, const ExpertActs<T>& a, ExpertScratch<T>& g,
                      const std::vector<int32_t>& offset) {
  using Acc = acc_t<T>;
  const int d = s.d, F = s.F;
  const size_t weight = size_t(F) * d;
  // dw2 += dy^T g;  dg = dy w2;  du = dg * act'(u);  dw1 += du^T x;  dx = du w1
  // (SwiGLU: du, du3 from dg;  dw3 += du3^T x;  dx += du3 w3)
  const T *dy = g.dy.data(), *x = a.x.data();
  T *dg = g.mlp.dg.data(), *du = g.mlp.du.data();
  std::vector<GroupMember<T, Acc>> dw2_of, dw1_of, dw3_of;
  std::vector<GroupMember<T, T>> dg_of, dx_of, dx3_of;
  for (const ExpertRows& r : experts_with_rows(offset)) {
    const size_t wd = r.e * weight;
    dw2_of.push_back({d, r.n, dy + r.row0 * d, a.mlp.g.data() + r.row0 * F, dw.w2 + wd});
    dg_of.push_back({r.n, d, dy + r.row0 * d, w.w2 + wd, dg + r.row0 * F});
    dw1_of.push_back({F, r.n, du + r.row0 * F, x + r.row0 * d, dw.w1 + wd});
    dx_of.push_back({r.n, F, du + r.row0 * F, w.w1 + wd, g.dx.data() + r.row0 * d});
    if (!s.swiglu) continue;
    const T* du3 = g.mlp.du3.data() + r.row0 * F;
    dw3_of.push_back({F, r.n, du3, x + r.row0 * d, dw.w3 + wd});
    dx3_of.push_back({r.n, F, du3, w.w3 + wd, g.dx.data() + r.row0 * d});
  }
  be.gemm_acc_grouped(Trans::T, Trans::N, F, Acc(1), d, F, Acc(1), F, dw2_of);
  be.gemm_grouped(Trans::N, Trans::N, F, T(1), d, F, T(0), F, dg_of);
  activation_backward(be, s, a.mlp, g.mlp, size_t(offset.back()) * F);
  be.gemm_acc_grouped(Trans::T, Trans::N, d, Acc(1), F, d, Acc(1), d, dw1_of);
  if (s.swiglu) be.gemm_acc_grouped(Trans::T, Trans::N, d, Acc(1), F, d, Acc(1), d, dw3_of);
  be.gemm_grouped(Trans::N, Trans::N, d, T(1), F, d, T(0), d, dx_of);
  if (s.swiglu) be.gemm_grouped(Trans::N, Trans::N, d, T(1), F, d, T(1), d, dx3_of);
}

#define MT_INSTANTIATE_EXPERTS(T)                                                                              \
  template void experts_forward<T>(Backend<T>&, const MlpShape&, const ExpertWeights<T>&, ExpertActs<T>&,    \
                                   const std::vector<int32_t>&);                                             \
  template void experts_backward<T>(Backend<T>&, const MlpShape&, const ExpertWeights<T>&,                   \
                                    const ExpertWeights<acc_t<T>>&, const ExpertActs<T>&, ExpertScratch<T>&,  \
                                    const std::vector<int32_t>&);
MT_INSTANTIATE_EXPERTS(float)
MT_INSTANTIATE_EXPERTS(double)
MT_INSTANTIATE_EXPERTS(bf16)

}  // namespace mt
