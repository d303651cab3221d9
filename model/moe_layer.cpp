#include "model/moe_layer.h"

namespace mt {

size_t expert_rows(const ModelConfig& cfg, int tokens, int ep) {
  return size_t(expert_rows_bound(cfg.capacity_factor, tokens, cfg.num_experts, cfg.router_topk, ep));
}

template <typename T>
MoeActs<T>::MoeActs(Backend<T>& be, const ModelConfig& cfg, int tokens, int ep)
    : router(be, cfg, tokens), experts(be, cfg, expert_rows(cfg, tokens, ep)) {
  if (ep > 1) y_returned = DeviceBuffer<T>(be, size_t(tokens) * cfg.router_topk * cfg.hidden_size);
}

template <typename T>
MoeLayer<T>::MoeLayer(Backend<T>& be, const ModelConfig& cfg, const ProcessGroup& tp, const ProcessGroup& ep,
                      int max_tokens)
    : be_(&be),
      cfg_(cfg),
      tp_(tp),
      dispatch_(be, cfg.num_experts, size_t(max_tokens) * cfg.router_topk, expert_rows(cfg, max_tokens, ep.size),
                cfg.hidden_size, ep) {
  if (!cfg.is_moe()) return;
  router_scratch_ = RouterScratch<T>(be, cfg, max_tokens);
  expert_scratch_ = ExpertScratch<T>(be, cfg, expert_rows(cfg, max_tokens, ep.size));
  dweight_ = DeviceBuffer<Acc>(be.acc(), size_t(max_tokens) * cfg.router_topk);
}

template <typename T>
RouterLosses MoeLayer<T>::forward(const MoeWeights<T>& w, MoeActs<T>& a, const T* m, T* out, int tokens,
                                  const SequenceCapacity* sequences) {
  const RouterLosses losses = router_forward(*be_, cfg_, w.router, a.router, m, tokens, sequences);
  const PackedRows<T> rows = a.router.rows();
  a.exchange = dispatch_.exchange(rows);
  dispatch_.dispatch(rows, a.exchange, m, a.experts.x.data());
  experts_forward(*be_, cfg_, w.experts, a.experts, a.exchange.expert_offset);
  be_->fill(out, T(0), size_t(tokens) * cfg_.hidden_size);
  dispatch_.combine(rows, a.exchange, a.experts.y.data(), a.returned(), out);
  tp_.all_reduce_sum(out, size_t(tokens) * cfg_.hidden_size);
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
  experts_backward(*be_, cfg_, w.experts, dw.experts, a.experts, expert_scratch_, a.exchange.expert_offset);
  be_->fill(dm, T(0), size_t(tokens) * cfg_.hidden_size);
  dispatch_.dispatch_backward(rows, a.exchange, expert_scratch_.dx.data(), dm);
  tp_.all_reduce_sum(dm, size_t(tokens) * cfg_.hidden_size);  // the experts' part; the router's is whole
  router_backward(*be_, cfg_, w.router, dw.router, a.router, router_scratch_, m, dweight_.data(), dm, tokens,
                  aux_scale);
}

template struct MoeActs<float>;
template struct MoeActs<double>;
template struct MoeActs<bf16>;
template class MoeLayer<float>;
template class MoeLayer<double>;
template class MoeLayer<bf16>;

}  // namespace mt
