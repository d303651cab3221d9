#include "model/moe_layer.h"

namespace mt {

size_t expert_rows(const ModelConfig& cfg, int tokens, int ep) {
  return size_t(expert_rows_bound(cfg.capacity_factor, tokens, cfg.num_experts, cfg.router_topk, ep));
}

MlpShape expert_shape(const ModelConfig& cfg) { return {cfg.hidden_size, cfg.expert_ffn(), cfg.swiglu}; }
MlpShape shared_expert_shape(const ModelConfig& cfg) {
  return {cfg.hidden_size, cfg.shared_expert_size, cfg.swiglu};
}

template <typename T>
MoeActs<T>::MoeActs(Backend<T>& be, const ModelConfig& cfg, int tokens, int ep)
    : router(be, cfg, tokens), experts(be, expert_shape(cfg), expert_rows(cfg, tokens, ep)) {
  const size_t d = cfg.hidden_size;
  if (ep > 1) y_returned = DeviceBuffer<T>(be, size_t(tokens) * cfg.router_topk * d);
  if (cfg.shared_expert_size == 0) return;
  shared = MlpActs<T>(be, shared_expert_shape(cfg), size_t(tokens));
  shared_out = DeviceBuffer<T>(be, size_t(tokens) * d);
  if (cfg.shared_expert_gate) gate = DeviceBuffer<Acc>(be.acc(), size_t(tokens));
}

template <typename T>
MoeLayer<T>::MoeLayer(Backend<T>& be, const ModelConfig& cfg, const ProcessGroup& tp, const ProcessGroup& ep,
                      int max_tokens, bool stage_has_moe_layers)
    : be_(&be),
      cfg_(cfg),
      tp_(tp),
      dispatch_(be, cfg.num_experts, stage_has_moe_layers ? size_t(max_tokens) * cfg.router_topk : 0,
                stage_has_moe_layers ? expert_rows(cfg, max_tokens, ep.size) : 0, cfg.hidden_size, ep) {
  if (!stage_has_moe_layers) return;
  router_scratch_ = RouterScratch<T>(be, cfg, max_tokens);
  expert_scratch_ = ExpertScratch<T>(be, expert_shape(cfg), expert_rows(cfg, max_tokens, ep.size));
  dweight_ = DeviceBuffer<Acc>(be.acc(), size_t(max_tokens) * cfg.router_topk);
  if (cfg.shared_expert_size == 0) return;
  const size_t td = size_t(max_tokens) * cfg.hidden_size;
  shared_scratch_ = MlpScratch<T>(be, shared_expert_shape(cfg), size_t(max_tokens));
  shared_dm_ = DeviceBuffer<T>(be, td);
  if (!cfg.shared_expert_gate) return;
  gated_ = DeviceBuffer<T>(be, td);
  gate_dot_ = DeviceBuffer<Acc>(be.acc(), size_t(max_tokens));
  gate_dlogit_ = DeviceBuffer<Acc>(be.acc(), size_t(max_tokens));
  if constexpr (!std::is_same_v<T, Acc>) gate_dlogit_t_ = DeviceBuffer<T>(be, size_t(max_tokens));
}

template <typename T>
RouterLosses MoeLayer<T>::forward(const MoeWeights<T>& w, const RouterState& state, MoeActs<T>& a, const T* m,
                                  T* out, int tokens, const SequenceCapacity* sequences) {
  const RouterLosses losses = router_forward(*be_, cfg_, state, w.router, a.router, m, tokens, sequences);
  const PackedRows<T> rows = a.router.rows();
  a.exchange = dispatch_.exchange(rows);
  dispatch_.dispatch(rows, a.exchange, m, a.experts.x.data());
  experts_forward(*be_, expert_shape(cfg_), w.experts, a.experts, a.exchange.expert_offset);
  be_->fill(out, T(0), size_t(tokens) * cfg_.hidden_size);
  dispatch_.combine(rows, a.exchange, a.experts.y.data(), a.returned(), out);
  if (cfg_.shared_expert_size > 0) shared_forward(w, a, m, out, tokens);
  return losses;
}

template <typename T>
void MoeLayer<T>::backward(const MoeWeights<T>& w, const MoeWeights<Acc>& dw, MoeActs<T>& a, const T* m,
                           const T* dout, T* dm, int tokens, double aux_scale) {
  const PackedRows<T> rows = a.router.rows();
  // Each kept row: dweight = dot(dout[token], y), y summed over TP;
  // dy = weight * dout[token].
  dispatch_.combine_backward(rows, a.exchange, dout, a.returned(), expert_scratch_.dy.data(), dweight_.data());
  tp_.all_reduce_sum(dweight_.data(), size_t(rows.rows()));
  experts_backward(*be_, expert_shape(cfg_), w.experts, dw.experts, a.experts, expert_scratch_,
                   a.exchange.expert_offset);
  be_->fill(dm, T(0), size_t(tokens) * cfg_.hidden_size);
  dispatch_.dispatch_backward(rows, a.exchange, expert_scratch_.dx.data(), dm);
  // The router's part of dm is whole on every TP rank: counted once.
  router_backward(*be_, cfg_, w.router, dw.router, a.router, router_scratch_, m, dweight_.data(),
                  tp_.rank == 0 ? dm : nullptr, tokens, aux_scale);
  if (cfg_.shared_expert_size > 0) shared_backward(w, dw, a, m, dout, dm, tokens);
}

// out += g_t s_t, s = shared(m) (partial over TP, as out is), g_t =
// sigmoid(m_t gate) with the gate, else 1.
template <typename T>
void MoeLayer<T>::shared_forward(const MoeWeights<T>& w, MoeActs<T>& a, const T* m, T* out, int tokens) {
  const int d = cfg_.hidden_size;
  const size_t n = size_t(tokens) * d;
  T* s = a.shared_out.data();
  mlp_forward(*be_, shared_expert_shape(cfg_), w.shared, a.shared, m, s, tokens);
  if (!cfg_.shared_expert_gate) {
    be_->axpy(n, T(1), s, out);
    return;
  }
  be_->gemm_acc(Trans::N, Trans::T, tokens, 1, d, Acc(1), m, d, w.shared_gate, d, Acc(0), a.gate.data(), 1);
  be_->acc().sigmoid_forward(a.gate.data(), a.gate.data(), size_t(tokens));
  be_->copy(gated_.data(), s, n);
  be_->scale_rows(gated_.data(), a.gate.data(), tokens, d);
  be_->axpy(n, T(1), gated_.data(), out);
}

// The gate's logit: dlogit_t = dot(dout_t, s_t) g_t (1 - g_t), the dot
// summed over TP (s is partial), then whole on every TP rank, so its share
// of dm is added on TP rank 0 alone; the shared expert gets dout_t g_t.
template <typename T>
void MoeLayer<T>::shared_backward(const MoeWeights<T>& w, const MoeWeights<Acc>& dw, MoeActs<T>& a, const T* m,
                                  const T* dout, T* dm, int tokens) {
  const int d = cfg_.hidden_size;
  const size_t n = size_t(tokens) * d;
  const T* ds = dout;
  if (cfg_.shared_expert_gate) {
    be_->row_dot(gate_dot_.data(), dout, a.shared_out.data(), tokens, d);
    tp_.all_reduce_sum(gate_dot_.data(), size_t(tokens));
    be_->acc().sigmoid_backward(gate_dlogit_.data(), gate_dot_.data(), a.gate.data(), size_t(tokens));
    const T* dlogit = nullptr;
    if constexpr (std::is_same_v<T, Acc>) {
      dlogit = gate_dlogit_.data();
    } else {
      be_->round_from_acc(gate_dlogit_t_.data(), gate_dlogit_.data(), size_t(tokens));
      dlogit = gate_dlogit_t_.data();
    }
    be_->gemm_acc(Trans::T, Trans::N, 1, d, tokens, Acc(1), dlogit, 1, m, d, Acc(1), dw.shared_gate, d);
    if (tp_.rank == 0) be_->gemm(Trans::N, Trans::N, tokens, d, 1, T(1), dlogit, 1, w.shared_gate, d, T(1), dm, d);
    be_->copy(gated_.data(), dout, n);
    be_->scale_rows(gated_.data(), a.gate.data(), tokens, d);
    ds = gated_.data();
  }
  mlp_backward(*be_, shared_expert_shape(cfg_), w.shared, dw.shared, a.shared, shared_scratch_, m, ds,
               shared_dm_.data(), tokens);
  be_->axpy(n, T(1), shared_dm_.data(), dm);
}

template struct MoeActs<float>;
template struct MoeActs<double>;
template struct MoeActs<bf16>;
template class MoeLayer<float>;
template class MoeLayer<double>;
template class MoeLayer<bf16>;

}  // namespace mt
