// A mixture-of-experts layer (docs/design.md sections 3.3 and 10), as
// Megatron's moe_layer.py reads: route (model/router.h), dispatch the kept
// rows to their experts (parallel/expert_dispatch.h: a gather on this rank,
// or an all-to-all over the EP group), compute (model/experts.h), combine
// the outputs back into their tokens weighted by the routing; and the
// backward pass in the reverse order. `cfg` is this TP rank's share (F/TP);
// the output and input gradient are summed over the TP group.
#pragma once

#include "model/config.h"
#include "model/experts.h"
#include "model/router.h"
#include "parallel/expert_dispatch.h"
#include "parallel/process_group.h"

namespace mt {

// The layer's tensors inside the flat weight (W = T) or gradient buffer
// (W = acc_t<T>): router [E, d], and this rank's experts.
template <typename W>
struct MoeWeights {
  W* router = nullptr;
  ExpertWeights<W> experts;
};

// What the forward pass keeps for the backward pass (T tokens).
template <typename T>
struct MoeActs {
  MoeActs() = default;
  // ep: the expert-parallel size the expert rows are sized for.
  MoeActs(Backend<T>& be, const ModelConfig& cfg, int tokens, int ep);
  RouterActs<T> router;
  ExpertExchange exchange;  // who sent this rank's experts which rows
  ExpertActs<T> experts;
  DeviceBuffer<T> y_returned;  // [T*K, d] outputs of this micro-batch's rows, back from EP
  // The outputs of this micro-batch's rows: the experts' own without EP.
  T* returned() { return y_returned.size() == 0 ? experts.y.data() : y_returned.data(); }
};

template <typename T>
class MoeLayer {
 public:
  using Acc = acc_t<T>;
  // max_tokens: the most tokens of a micro-batch; ep: the EP group. One
  // MoeLayer serves every MoE layer of a stage, each with its own weights
  // and activations; in a dense model it allocates nothing.
  MoeLayer(Backend<T>& be, const ModelConfig& cfg, const ProcessGroup& tp, const ProcessGroup& ep, int max_tokens);

  // out [T, d] = moe(m [T, d]) (overwrites); returns the router's losses.
  // sequences: generation's capacity (route_tokens).
  RouterLosses forward(const MoeWeights<T>& w, MoeActs<T>& a, const T* m, T* out, int tokens,
                       const SequenceCapacity* sequences = nullptr);
  // Given dout = d loss / d out, accumulates the weight gradients into dw
  // and writes the input gradient dm (overwrites). aux_scale multiplies the
  // router's losses.
  void backward(const MoeWeights<T>& w, const MoeWeights<Acc>& dw, MoeActs<T>& a, const T* m, const T* dout, T* dm,
                int tokens, double aux_scale);

  DispatchStats& dispatch_stats() { return dispatch_.stats; }

 private:
  Backend<T>* be_ = nullptr;
  ModelConfig cfg_;
  ProcessGroup tp_;
  ExpertDispatch<T> dispatch_;
  RouterScratch<T> router_scratch_;
  ExpertScratch<T> expert_scratch_;
  DeviceBuffer<Acc> dweight_;  // [T*K] gradient of each kept row's routing weight
};

// R: the rows this rank's experts can receive from a micro-batch of
// `tokens` tokens on each EP rank (expert_rows_bound).
size_t expert_rows(const ModelConfig& cfg, int tokens, int ep);

}  // namespace mt
