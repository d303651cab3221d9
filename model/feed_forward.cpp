#include "model/feed_forward.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace mt {

namespace {
// R: the rows this rank's experts can receive.
size_t expert_rows(const ModelConfig& cfg, int tokens, int ep) {
  return size_t(expert_rows_bound(cfg.capacity_factor, tokens, cfg.num_experts, cfg.router_topk, ep));
}

// A local expert with rows: e, and its rows [row0, row0 + n) of the
// packed expert buffers.
struct ExpertRows {
  size_t e, row0;
  int n;
};
std::vector<ExpertRows> experts_with_rows(const ExpertExchange& ex) {
  std::vector<ExpertRows> experts;
  for (size_t e = 0; e + 1 < ex.expert_offset.size(); ++e) {
    const int n = ex.expert_offset[e + 1] - ex.expert_offset[e];
    if (n > 0) experts.push_back({e, size_t(ex.expert_offset[e]), n});
  }
  return experts;
}
}  // namespace

template <typename T>
FfnActs<T>::FfnActs(Backend<T>& be, const ModelConfig& cfg, int tokens, int ep) {
  const size_t d = cfg.hidden_size, F = cfg.ffn_hidden_size;
  if (cfg.is_moe()) {
    const size_t packed = size_t(tokens) * cfg.router_topk, rows = expert_rows(cfg, tokens, ep);
    probs = DeviceBuffer<Acc>(be.acc(), size_t(tokens) * cfg.num_experts);
    packed_token = DeviceBuffer<T, int32_t>(be, packed);
    packed_weight = DeviceBuffer<Acc>(be.acc(), packed);
    x = DeviceBuffer<T>(be, rows * d);
    u = DeviceBuffer<T>(be, rows * F);
    g = DeviceBuffer<T>(be, rows * F);
    y = DeviceBuffer<T>(be, rows * d);
    if (ep > 1) y_returned = DeviceBuffer<T>(be, packed * d);
  } else {
    u = DeviceBuffer<T>(be, size_t(tokens) * F);
    g = DeviceBuffer<T>(be, size_t(tokens) * F);
  }
}

template <typename T>
FfnScratch<T>::FfnScratch(Backend<T>& be, const ModelConfig& cfg, int tokens, int ep) {
  // The dense MLP's rows are its T tokens (K = 1).
  const size_t packed = size_t(tokens) * cfg.router_topk, rows = cfg.is_moe() ? expert_rows(cfg, tokens, ep) : packed;
  dy = DeviceBuffer<T>(be, rows * cfg.hidden_size);
  dg = DeviceBuffer<T>(be, rows * cfg.ffn_hidden_size);
  du = DeviceBuffer<T>(be, rows * cfg.ffn_hidden_size);
  dx = DeviceBuffer<T>(be, rows * cfg.hidden_size);
  dw = DeviceBuffer<Acc>(be.acc(), packed);
  dprobs = DeviceBuffer<Acc>(be.acc(), size_t(tokens) * cfg.num_experts);
  dlogits = DeviceBuffer<Acc>(be.acc(), size_t(tokens) * cfg.num_experts);
  if constexpr (!std::is_same_v<T, Acc>) dlogits_t = DeviceBuffer<T>(be, size_t(tokens) * cfg.num_experts);
}

template <typename T>
RouterLosses ffn_forward(Backend<T>& be, const ProcessGroup& tp, const ModelConfig& cfg,
                   ExpertDispatch<T>& dispatch, const FfnWeights<T>& w, FfnActs<T>& a, const T* m, T* out,
                   int tokens, const SequenceCapacity* sequences) {
  const int d = cfg.hidden_size, F = cfg.ffn_hidden_size, E = cfg.num_experts, K = cfg.router_topk;
  if (!cfg.is_moe()) {
    // out = gelu(m w1^T) w2^T, this rank's slice of F, summed over TP
    be.gemm(Trans::N, Trans::T, tokens, F, d, T(1), m, d, w.w1, d, T(0), a.u.data(), F);
    be.gelu_forward(a.g.data(), a.u.data(), size_t(tokens) * F);
    be.gemm(Trans::N, Trans::T, tokens, d, F, T(1), a.g.data(), F, w.w2, F, T(0), out, d);
    tp.all_reduce_sum(out, size_t(tokens) * d);
    return {};
  }

  // Router, in Acc: p = softmax(m router^T), then top-K and capacity on the host.
  using Acc = acc_t<T>;
  Backend<Acc>& acc = be.acc();
  be.gemm_acc(Trans::N, Trans::T, tokens, E, d, Acc(1), m, d, w.router, d, Acc(0), a.probs.data(), E);
  std::vector<Acc> probs(size_t(tokens) * E);
  double z = 0.0;
  if (cfg.z_loss_coeff > 0) {  // z = c mean_t lse_t^2, from the logits before the softmax replaces them
    acc.to_host(probs.data(), a.probs.data(), probs.size());
    a.router_lse.resize(tokens);
    for (int t = 0; t < tokens; ++t) {
      const Acc* r = probs.data() + size_t(t) * E;
      const double top = *std::max_element(r, r + E);
      double sum = 0.0;
      for (int e = 0; e < E; ++e) sum += std::exp(double(r[e]) - top);
      a.router_lse[t] = top + std::log(sum);
      z += a.router_lse[t] * a.router_lse[t];
    }
    z *= cfg.z_loss_coeff / tokens;
  }
  acc.softmax_forward(a.probs.data(), a.probs.data(), tokens, E);
  acc.to_host(probs.data(), a.probs.data(), probs.size());
  a.routing = route_tokens(probs.data(), tokens, E, K, cfg.capacity_factor, cfg.aux_loss_coeff, sequences);
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

  // Each local expert: y_e = gelu(x_e w1[e]^T) w2[e]^T over its rows, the
  // experts' products grouped. The router and routing are the same on every
  // TP rank (replicated router, replicated input); each rank's y is its
  // slice of F's share.
  const PackedRows<T> rows{a.packed_token.data(), a.packed_weight.data(), &r.expert_offset};
  a.exchange = dispatch.exchange(rows);
  const ExpertExchange& ex = a.exchange;
  dispatch.dispatch(rows, ex, m, a.x.data());
  std::vector<GroupMember<T, T>> up, down;
  for (const ExpertRows& x : experts_with_rows(ex)) {
    up.push_back({x.n, d, a.x.data() + x.row0 * d, w.w1 + x.e * F * d, a.u.data() + x.row0 * F});
    down.push_back({x.n, F, a.g.data() + x.row0 * F, w.w2 + x.e * d * F, a.y.data() + x.row0 * d});
  }
  be.gemm_grouped(Trans::N, Trans::T, F, T(1), d, d, T(0), F, up);  // u = x w1^T
  be.gelu_forward(a.g.data(), a.u.data(), size_t(ex.rows()) * F);
  be.gemm_grouped(Trans::N, Trans::T, d, T(1), F, F, T(0), d, down);  // y = g w2^T
  be.fill(out, T(0), size_t(tokens) * d);
  dispatch.combine(rows, ex, a.y.data(), a.returned(), out);
  tp.all_reduce_sum(out, size_t(tokens) * d);
  return {r.aux_loss, z};
}

template <typename T>
void ffn_backward(Backend<T>& be, const ProcessGroup& tp, const ModelConfig& cfg,
                  ExpertDispatch<T>& dispatch, const FfnWeights<T>& w, const FfnWeights<acc_t<T>>& dw, FfnActs<T>& a,
                  FfnScratch<T>& s, const T* m, const T* dout, T* dm, int tokens, double aux_scale) {
  using Acc = acc_t<T>;
  const int d = cfg.hidden_size, F = cfg.ffn_hidden_size, E = cfg.num_experts, K = cfg.router_topk;
  if (!cfg.is_moe()) {
    // dg = dout w2;  dw2 += dout^T g;  du = dg * gelu'(u);  dw1 += du^T m;  dm = du w1
    const size_t n = size_t(tokens) * F;
    be.gemm(Trans::N, Trans::N, tokens, F, d, T(1), dout, d, w.w2, F, T(0), s.dg.data(), F);
    be.gemm_acc(Trans::T, Trans::N, d, F, tokens, Acc(1), dout, d, a.g.data(), F, Acc(1), dw.w2, F);
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
  const ExpertExchange& ex = a.exchange;
  dispatch.combine_backward(rows, ex, dout, a.returned(), s.dy.data(), s.dw.data());
  tp.all_reduce_sum(s.dw.data(), size_t(kept));
  // Each expert, grouped: dw2 += dy^T g;  dg = dy w2;  du = dg * gelu'(u);
  // dw1 += du^T x;  dx = du w1
  std::vector<GroupMember<T, Acc>> dw2_of, dw1_of;
  std::vector<GroupMember<T, T>> dg_of, dx_of;
  for (const ExpertRows& x : experts_with_rows(ex)) {
    const T* dy = s.dy.data() + x.row0 * d;
    const T* du = s.du.data() + x.row0 * F;
    dw2_of.push_back({d, x.n, dy, a.g.data() + x.row0 * F, dw.w2 + x.e * d * F});
    dg_of.push_back({x.n, d, dy, w.w2 + x.e * d * F, s.dg.data() + x.row0 * F});
    dw1_of.push_back({F, x.n, du, a.x.data() + x.row0 * d, dw.w1 + x.e * F * d});
    dx_of.push_back({x.n, F, du, w.w1 + x.e * F * d, s.dx.data() + x.row0 * d});
  }
  be.gemm_acc_grouped(Trans::T, Trans::N, F, Acc(1), d, F, Acc(1), F, dw2_of);
  be.gemm_grouped(Trans::N, Trans::N, F, T(1), d, F, T(0), F, dg_of);
  be.gelu_backward(s.du.data(), s.dg.data(), a.u.data(), size_t(ex.rows()) * F);
  be.gemm_acc_grouped(Trans::T, Trans::N, d, Acc(1), F, d, Acc(1), d, dw1_of);
  be.gemm_grouped(Trans::N, Trans::N, d, T(1), F, d, T(0), d, dx_of);
  be.fill(dm, T(0), size_t(tokens) * d);
  dispatch.dispatch_backward(rows, ex, s.dx.data(), dm);
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
  if (cfg.z_loss_coeff > 0) {
    // d z / d r[t, e] = c 2 lse_t p[t, e] / T: the logits' own gradient,
    // past the softmax (dprobs is free again to carry it).
    std::vector<Acc> probs(dprobs.size());
    acc.to_host(probs.data(), a.probs.data(), probs.size());
    const double z_coeff = aux_scale * cfg.z_loss_coeff * 2.0 / tokens;
    for (int t = 0; t < tokens; ++t)
      for (int e = 0; e < E; ++e) {
        const size_t i = size_t(t) * E + e;
        dprobs[i] = Acc(z_coeff * a.router_lse[t] * double(probs[i]));
      }
    acc.from_host(s.dprobs.data(), dprobs.data(), dprobs.size());
    acc.axpy(dprobs.size(), Acc(1), s.dprobs.data(), s.dlogits.data());
  }
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
  template RouterLosses ffn_forward<T>(Backend<T>&, const ProcessGroup&, const ModelConfig&,          \
                                 ExpertDispatch<T>&, const FfnWeights<T>&, FfnActs<T>&, const T*, T*, \
                                 int, const SequenceCapacity*);                                    \
  template void ffn_backward<T>(Backend<T>&, const ProcessGroup&, const ModelConfig&,           \
                                ExpertDispatch<T>&, const FfnWeights<T>&, const FfnWeights<acc_t<T>>&, \
                                FfnActs<T>&, FfnScratch<T>&, const T*, const T*, T*, int, double);
MT_INSTANTIATE_FFN(float)
MT_INSTANTIATE_FFN(double)
MT_INSTANTIATE_FFN(bf16)

}  // namespace mt
