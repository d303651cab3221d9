// A mixture-of-experts layer (docs/design.md sections 3.3 and 10), as
// Megatron's moe_layer.py reads: route (model/router.h), dispatch the kept
// rows to their experts (parallel/expert_dispatch.h: a gather on this rank,
// or an all-to-all over the EP group), compute (model/experts.h), combine
// the outputs back into their tokens weighted by the routing; beside them
// the shared expert (--moe-shared-expert-intermediate-size), a dense MLP
// every token passes through, its output scaled by a sigmoid gate with
// --moe-shared-expert-gate (Qwen2-MoE); and the backward pass in the
// reverse order. `cfg` is this TP rank's share (its hidden sizes divided by
// TP); the output and input gradient are this rank's partial sums, which the
// caller reduces over the TP group (an all-reduce, or sequence
// parallelism's reduce-scatter).
#pragma once

#include "model/config.h"
#include "model/dense_mlp.h"
#include "model/experts.h"
#include "model/router.h"
#include "parallel/expert_dispatch.h"
#include "parallel/process_group.h"

namespace mt {

// The layer's tensors inside the flat weight (W = T) or gradient buffer
// (W = acc_t<T>): router [E, d], this rank's experts, the shared expert
// and its gate [1, d] (null without).
template <typename W>
struct MoeWeights {
  W* router = nullptr;
  ExpertWeights<W> experts;
  MlpWeights<W> shared;
  W* shared_gate = nullptr;
};

// What the forward pass keeps for the backward pass (T tokens).
template <typename T>
struct MoeActs {
  using Acc = acc_t<T>;
  MoeActs() = default;
  // ep: the expert-parallel size the expert rows are sized for.
  MoeActs(Backend<T>& be, const ModelConfig& cfg, int tokens, int ep);
  RouterActs<T> router;
  ExpertExchange exchange;  // who sent this rank's experts which rows
  ExpertActs<T> experts;
  DeviceBuffer<T> y_returned;  // [T*K, d] outputs of this micro-batch's rows, back from EP
  MlpActs<T> shared;           // the shared expert's hidden rows
  DeviceBuffer<T> shared_out;  // [T, d] its output, before the gate
  DeviceBuffer<Acc> gate;      // [T] sigmoid(m gate^T)
  // The outputs of this micro-batch's rows: the experts' own without EP.
  T* returned() { return y_returned.size() == 0 ? experts.y.data() : y_returned.data(); }
};

// The shapes of an MoE layer's MLPs on a TP rank (cfg: the rank's share).
MlpShape expert_shape(const ModelConfig& cfg);
MlpShape shared_expert_shape(const ModelConfig& cfg);

template <typename T>
class MoeLayer {
 public:
  using Acc = acc_t<T>;
  // max_tokens: the most tokens of a micro-batch; ep: the EP group. One
  // MoeLayer serves every MoE layer of a stage, each with its own weights
  // and activations; on a stage without MoE layers it allocates nothing.
  MoeLayer(Backend<T>& be, const ModelConfig& cfg, const ProcessGroup& tp, const ProcessGroup& ep, int max_tokens,
           bool stage_has_moe_layers);

  // out [T, d] = moe(m [T, d]) (overwrites; partial over TP); returns the
  // router's losses.
  // state: the layer's expert bias and global shares; sequences:
  // generation's capacity (route_tokens).
  RouterLosses forward(const MoeWeights<T>& w, const RouterState& state, MoeActs<T>& a, const T* m, T* out,
                       int tokens, const SequenceCapacity* sequences = nullptr);
  // Given dout = d loss / d out, accumulates the weight gradients into dw
  // and writes the input gradient dm (overwrites; partial over TP: the
  // parts every TP rank computes whole, the router's and the gate's, are
  // added on TP rank 0 alone). aux_scale multiplies the router's losses.
  void backward(const MoeWeights<T>& w, const MoeWeights<Acc>& dw, MoeActs<T>& a, const T* m, const T* dout, T* dm,
                int tokens, double aux_scale);

  DispatchStats& dispatch_stats() { return dispatch_.stats; }

 private:
  void shared_forward(const MoeWeights<T>& w, MoeActs<T>& a, const T* m, T* out, int tokens);
  void shared_backward(const MoeWeights<T>& w, const MoeWeights<Acc>& dw, MoeActs<T>& a, const T* m, const T* dout,
                       T* dm, int tokens);

  Backend<T>* be_ = nullptr;
  ModelConfig cfg_;
  ProcessGroup tp_;
  ExpertDispatch<T> dispatch_;
  RouterScratch<T> router_scratch_;
  ExpertScratch<T> expert_scratch_;
  DeviceBuffer<Acc> dweight_;  // [T*K] gradient of each kept row's routing weight
  // The shared expert's: its backward work space, the gated output (and
  // the gated gradient), its input gradient, and the gate's gradient
  // (dot(dout, shared_out), then through the sigmoid, in Acc and in T).
  MlpScratch<T> shared_scratch_;
  DeviceBuffer<T> gated_, shared_dm_;  // [T, d]
  DeviceBuffer<Acc> gate_dot_, gate_dlogit_;  // [T]
  DeviceBuffer<T> gate_dlogit_t_;             // [T] (bf16 only)
};

// R: the rows this rank's experts can receive from a micro-batch of
// `tokens` tokens on each EP rank (expert_rows_bound).
size_t expert_rows(const ModelConfig& cfg, int tokens, int ep);

}  // namespace mt
