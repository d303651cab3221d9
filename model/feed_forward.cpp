#include "model/feed_forward.h"

#include <vector>

namespace mt {

template <typename T>
FfnActs<T>::FfnActs(Backend<T>& be, const ModelConfig& cfg, int tokens) {
  const size_t d = cfg.hidden_size, F = cfg.ffn_hidden_size;
  if (cfg.is_moe()) {
    const size_t rows = size_t(tokens) * cfg.router_topk;
    probs = DeviceBuffer<Acc>(be.acc(), size_t(tokens) * cfg.num_experts);
    packed_token = DeviceBuffer<T, int32_t>(be, rows);
    packed_weight = DeviceBuffer<Acc>(be.acc(), rows);
    x = DeviceBuffer<T>(be, rows * d);
    u = DeviceBuffer<T>(be, rows * F);
    g = DeviceBuffer<T>(be, rows * F);
    y = DeviceBuffer<T>(be, rows * d);
  } else {
    u = DeviceBuffer<T>(be, size_t(tokens) * F);
    g = DeviceBuffer<T>(be, size_t(tokens) * F);
  }
}

template <typename T>
FfnScratch<T>::FfnScratch(Backend<T>& be, const ModelConfig& cfg, int tokens) {
  const size_t rows = size_t(tokens) * cfg.router_topk;
  dy = DeviceBuffer<T>(be, rows * cfg.hidden_size);
  dg = DeviceBuffer<T>(be, rows * cfg.ffn_hidden_size);
  du = DeviceBuffer<T>(be, rows * cfg.ffn_hidden_size);
  dx = DeviceBuffer<T>(be, rows * cfg.hidden_size);
  dw = DeviceBuffer<Acc>(be.acc(), rows);
  dprobs = DeviceBuffer<Acc>(be.acc(), size_t(tokens) * cfg.num_experts);
  dlogits = DeviceBuffer<Acc>(be.acc(), size_t(tokens) * cfg.num_experts);
  if constexpr (!std::is_same_v<T, Acc>) dlogits_t = DeviceBuffer<T>(be, size_t(tokens) * cfg.num_experts);
}

template <typename T>
double ffn_forward(Backend<T>& be, const TensorParallel& tp, const ModelConfig& cfg,
                   ExpertDispatch<T>& dispatch, const FfnWeights<T>& w, FfnActs<T>& a, const T* m, T* out,
                   int tokens) {
  const int d = cfg.hidden_size, F = cfg.ffn_hidden_size, E = cfg.num_experts, K = cfg.router_topk;
  if (!cfg.is_moe()) {
    // out = gelu(m w1^T) w2^T, this rank's slice of F, summed over TP
    be.gemm(Trans::N, Trans::T, tokens, F, d, T(1), m, d, w.w1, d, T(0), a.u.data(), F);
    be.gelu_forward(a.g.data(), a.u.data(), size_t(tokens) * F);
    be.gemm(Trans::N, Trans::T, tokens, d, F, T(1), a.g.data(), F, w.w2, F, T(0), out, d);
    tp.all_reduce_sum(out, size_t(tokens) * d);
    return 0.0;
  }

  // Router, in Acc: p = softmax(m router^T), then top-K and capacity on the host.
  using Acc = acc_t<T>;
  Backend<Acc>& acc = be.acc();
  be.gemm_acc(Trans::N, Trans::T, tokens, E, d, Acc(1), m, d, w.router, d, Acc(0), a.probs.data(), E);
  acc.softmax_forward(a.probs.data(), a.probs.data(), tokens, E);
  std::vector<Acc> probs(size_t(tokens) * E);
  acc.to_host(probs.data(), a.probs.data(), probs.size());
  a.routing = route_tokens(probs.data(), tokens, E, K, cfg.capacity_factor, cfg.aux_loss_coeff);
  const Routing& r = a.routing;

  const int kept = int(r.packed_slot.size());
  std::vector<int32_t> token(kept);
  std::vector<Acc> weight(kept);
  for (int i = 0; i < kept; ++i) {
    token[i] = r.packed_slot[i] / K;
    weight[i] = Acc(r.weight[r.packed_slot[i]]);
  }
  be.int_from_host(a.packed_token.data(), token.data(), kept);
  acc.from_host(a.packed_weight.data(), weight.data(), kept);

  // Each expert: y_e = gelu(x_e w1[e]^T) w2[e]^T over its packed rows. The
  // router and routing are the same on every TP rank (replicated router,
  // replicated input); each rank's y is its slice of F's share.
  const PackedRows<T> rows{a.packed_token.data(), a.packed_weight.data(), &r.expert_offset};
  dispatch.dispatch(rows, m, a.x.data(), d);
  for (int e = 0; e < E; ++e) {
    const int row0 = r.expert_offset[e], n = r.expert_offset[e + 1] - row0;
    if (n == 0) continue;
    const T* w1 = w.w1 + size_t(e) * F * d;
    const T* w2 = w.w2 + size_t(e) * d * F;
    T* x = a.x.data() + size_t(row0) * d;
    T* u = a.u.data() + size_t(row0) * F;
    T* g = a.g.data() + size_t(row0) * F;
    T* y = a.y.data() + size_t(row0) * d;
    be.gemm(Trans::N, Trans::T, n, F, d, T(1), x, d, w1, d, T(0), u, F);
    be.gelu_forward(g, u, size_t(n) * F);
    be.gemm(Trans::N, Trans::T, n, d, F, T(1), g, F, w2, F, T(0), y, d);
  }
  be.fill(out, T(0), size_t(tokens) * d);
  dispatch.combine(rows, a.y.data(), out, d);
  tp.all_reduce_sum(out, size_t(tokens) * d);
  return r.aux_loss;
}

template <typename T>
void ffn_backward(Backend<T>& be, const TensorParallel& tp, const ModelConfig& cfg,
                  ExpertDispatch<T>& dispatch, const FfnWeights<T>& w, const FfnWeights<acc_t<T>>& dw, FfnActs<T>& a,
                  FfnScratch<T>& s, const T* m, const T* dout, T* dm, int tokens, double aux_scale) {
  using Acc = acc_t<T>;
  const int d = cfg.hidden_size, F = cfg.ffn_hidden_size, E = cfg.num_experts, K = cfg.router_topk;
  if (!cfg.is_moe()) {
    // dg = dout w2;  dw2 += dout^T g;  du = dg * gelu'(u);  dw1 += du^T m;  dm = du w1
    const size_t n = size_t(tokens) * F;
    be.gemm(Trans::N, Trans::N, tokens, F, d, T(1), dout, d, w.w2, F, T(0), s.dg.data(), F);
    be.gemm_acc(Trans::T, Trans::N, d, F, tokens, Acc(1), dout, d, a.g.data(), F, Acc(1), dw.w2, F);
    be.fill(s.du.data(), T(0), n);
    be.gelu_backward(s.du.data(), s.dg.data(), a.u.data(), n);
    be.gemm_acc(Trans::T, Trans::N, F, d, tokens, Acc(1), s.du.data(), F, m, d, Acc(1), dw.w1, d);
    be.gemm(Trans::N, Trans::N, tokens, d, F, T(1), s.du.data(), F, w.w1, d, T(0), dm, d);
    tp.all_reduce_sum(dm, size_t(tokens) * d);
    return;
  }

  const Routing& r = a.routing;
  const int kept = int(r.packed_slot.size());
  // Packed rows: dweight = dot(dout[token], y), y summed over TP;
  // dy = weight * dout[token].
  const PackedRows<T> rows{a.packed_token.data(), a.packed_weight.data(), &r.expert_offset};
  dispatch.combine_backward(rows, dout, a.y.data(), s.dy.data(), s.dw.data(), d);
  tp.all_reduce_sum(s.dw.data(), size_t(kept));
  for (int e = 0; e < E; ++e) {
    const int row0 = r.expert_offset[e], n = r.expert_offset[e + 1] - row0;
    if (n == 0) continue;
    const T* w1 = w.w1 + size_t(e) * F * d;
    const T* w2 = w.w2 + size_t(e) * d * F;
    Acc* dw1 = dw.w1 + size_t(e) * F * d;
    Acc* dw2 = dw.w2 + size_t(e) * d * F;
    const T* x = a.x.data() + size_t(row0) * d;
    const T* u = a.u.data() + size_t(row0) * F;
    const T* g = a.g.data() + size_t(row0) * F;
    const T* dy = s.dy.data() + size_t(row0) * d;
    T* dg = s.dg.data() + size_t(row0) * F;
    T* du = s.du.data() + size_t(row0) * F;
    T* dx = s.dx.data() + size_t(row0) * d;
    // dw2 += dy^T g;  dg = dy w2;  du = dg * gelu'(u);  dw1 += du^T x;  dx = du w1
    be.gemm_acc(Trans::T, Trans::N, d, F, n, Acc(1), dy, d, g, F, Acc(1), dw2, F);
    be.gemm(Trans::N, Trans::N, n, F, d, T(1), dy, d, w2, F, T(0), dg, F);
    be.fill(du, T(0), size_t(n) * F);
    be.gelu_backward(du, dg, u, size_t(n) * F);
    be.gemm_acc(Trans::T, Trans::N, F, d, n, Acc(1), du, F, x, d, Acc(1), dw1, d);
    be.gemm(Trans::N, Trans::N, n, d, F, T(1), du, F, w1, d, T(0), dx, d);
  }
  be.fill(dm, T(0), size_t(tokens) * d);
  dispatch.dispatch_backward(rows, s.dx.data(), dm, d);
  tp.all_reduce_sum(dm, size_t(tokens) * d);  // the experts' part; the router's is whole below

  // Router. w_k = p_k / s with s the top-K sum, so for a top-K expert
  // dp_k = (dw_k - sum_j dw_j w_j) / s; the aux loss adds
  // alpha * E * f_e / T to every dp_e (f_e carries no gradient).
  Backend<Acc>& acc = be.acc();
  std::vector<Acc> dweight_packed(kept);
  acc.to_host(dweight_packed.data(), s.dw.data(), kept);
  std::vector<double> dweight(size_t(tokens) * K, 0.0);  // dropped slots stay 0
  for (int i = 0; i < kept; ++i) dweight[r.packed_slot[i]] = double(dweight_packed[i]);
  std::vector<Acc> dprobs(size_t(tokens) * E);
  const double aux_coeff = aux_scale * cfg.aux_loss_coeff * E / tokens;
  for (int t = 0; t < tokens; ++t) {
    double dot = 0.0;
    for (int k = 0; k < K; ++k) dot += dweight[size_t(t) * K + k] * r.weight[size_t(t) * K + k];
    for (int e = 0; e < E; ++e) dprobs[size_t(t) * E + e] = Acc(aux_coeff * r.choice_share[e]);
    for (int k = 0; k < K; ++k) {
      size_t slot = size_t(t) * K + k;
      dprobs[size_t(t) * E + r.expert[slot]] += Acc((dweight[slot] - dot) / r.topk_sum[t]);
    }
  }
  acc.from_host(s.dprobs.data(), dprobs.data(), dprobs.size());
  acc.fill(s.dlogits.data(), Acc(0), dprobs.size());
  acc.softmax_backward(s.dlogits.data(), s.dprobs.data(), a.probs.data(), tokens, E);
  // The router's products read dlogits in T.
  const T* dlogits = nullptr;
  if constexpr (std::is_same_v<T, Acc>) {
    dlogits = s.dlogits.data();
  } else {
    be.round_from_acc(s.dlogits_t.data(), s.dlogits.data(), dprobs.size());
    dlogits = s.dlogits_t.data();
  }
  be.gemm_acc(Trans::T, Trans::N, E, d, tokens, Acc(1), dlogits, E, m, d, Acc(1), dw.router, d);
  be.gemm(Trans::N, Trans::N, tokens, d, E, T(1), dlogits, E, w.router, d, T(1), dm, d);
}

#define MT_INSTANTIATE_FFN(T)                                                                      \
  template struct FfnActs<T>;                                                                      \
  template struct FfnScratch<T>;                                                                   \
  template double ffn_forward<T>(Backend<T>&, const TensorParallel&, const ModelConfig&,          \
                                 ExpertDispatch<T>&, const FfnWeights<T>&, FfnActs<T>&, const T*, T*, \
                                 int);                                                             \
  template void ffn_backward<T>(Backend<T>&, const TensorParallel&, const ModelConfig&,           \
                                ExpertDispatch<T>&, const FfnWeights<T>&, const FfnWeights<acc_t<T>>&, \
                                FfnActs<T>&, FfnScratch<T>&, const T*, const T*, T*, int, double);
MT_INSTANTIATE_FFN(float)
MT_INSTANTIATE_FFN(double)
MT_INSTANTIATE_FFN(bf16)

}  // namespace mt
