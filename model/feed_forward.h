// The feed-forward block of a layer: a dense GELU MLP (E = 1) or a top-K
// mixture of experts (E > 1), forward and backward side by side. Under tensor
// parallelism each rank holds a slice of F (w1 column-parallel, w2
// row-parallel): `cfg` here is the rank's share, ffn_hidden_size = F / TP,
// and the block's output and input gradient are sums over the TP group.
#pragma once

#include "model/config.h"
#include "model/routing.h"
#include "parallel/expert_dispatch.h"
#include "parallel/tensor_parallel.h"
#include "runtime/backend.h"

namespace mt {

// Tensors of one layer's FFN inside the flat parameter buffer (W = T) or
// its gradient buffer (W = acc_t<T>). Dense: w1 [F, d], w2 [d, F]. MoE:
// router [E, d], w1 [E, F, d], w2 [E, d, F].
template <typename W>
struct FfnWeights {
  W* router = nullptr;
  W* w1 = nullptr;
  W* w2 = nullptr;
};

// What the forward pass keeps for the backward pass. Rows: T tokens for the
// dense MLP; for the experts, up to T*K packed (token, slot) assignments
// of this micro-batch, and R expert rows this rank's experts process (the
// packed rows themselves without EP; up to expert_rows_bound with EP, from
// every rank of the EP group). Routing is float32 under bf16 (Acc).
template <typename T>
struct FfnActs {
  using Acc = acc_t<T>;
  FfnActs() = default;
  // ep: the expert-parallel size the rows are sized for.
  FfnActs(Backend<T>& be, const ModelConfig& cfg, int tokens, int ep = 1);
  DeviceBuffer<Acc> probs;                // [T, E] router softmax
  Routing routing;                        // host-side routing decisions
  ExpertExchange exchange;                // who sent this rank's experts which rows
  std::vector<double> router_lse;         // [T] logsumexp of each token's router logits (z-loss only)
  DeviceBuffer<T, int32_t> packed_token;  // [T*K] token of each packed row
  DeviceBuffer<Acc> packed_weight;        // [T*K] routing weight of each packed row
  DeviceBuffer<T> x;                      // [R, d] expert inputs (MoE only)
  DeviceBuffer<T> u;                      // [R, F] before GELU (rows: T for the dense MLP)
  DeviceBuffer<T> g;                      // [R, F] after GELU
  DeviceBuffer<T> y;                      // [R, d] expert outputs (MoE only)
  DeviceBuffer<T> y_returned;             // [T*K, d] outputs of the packed rows, back from EP
  // The outputs of this micro-batch's packed rows: y itself without EP.
  T* returned() { return y_returned.size() == 0 ? y.data() : y_returned.data(); }
};

// Scratch for the backward pass, shared by all layers.
template <typename T>
struct FfnScratch {
  using Acc = acc_t<T>;
  FfnScratch() = default;
  FfnScratch(Backend<T>& be, const ModelConfig& cfg, int tokens, int ep = 1);
  DeviceBuffer<T> dy;          // [R, d]
  DeviceBuffer<T> dg;          // [R, F] gradient after GELU
  DeviceBuffer<T> du;          // [R, F] gradient before GELU
  DeviceBuffer<T> dx;          // [R, d]
  DeviceBuffer<Acc> dw;        // [T*K] gradient of each packed row's weight
  DeviceBuffer<Acc> dprobs;    // [T, E]
  DeviceBuffer<Acc> dlogits;   // [T, E]
  DeviceBuffer<T> dlogits_t;   // [T, E] dlogits rounded to T for the products (bf16 only)
};

// The router's losses of one layer and micro-batch (0 for dense).
struct RouterLosses {
  double aux = 0.0;  // load balancing
  double z = 0.0;    // z-loss
};

// out[T, d] = ffn(m[T, d]) (overwrites; summed over TP). Returns the layer's
// router losses. dispatch moves the MoE rows to their
// experts and back; w holds the experts dispatch says are local.
// sequences: generation's capacity (route_tokens).
template <typename T>
RouterLosses ffn_forward(Backend<T>& be, const ProcessGroup& tp, const ModelConfig& cfg, ExpertDispatch<T>& dispatch,
                   const FfnWeights<T>& w, FfnActs<T>& acts, const T* m, T* out, int tokens,
                   const SequenceCapacity* sequences = nullptr);

// Given dout = d loss / d out, accumulates weight gradients into dw and
// writes the input gradient to dm (overwrites; summed over TP). aux_scale
// multiplies the router losses.
template <typename T>
void ffn_backward(Backend<T>& be, const ProcessGroup& tp, const ModelConfig& cfg, ExpertDispatch<T>& dispatch,
                  const FfnWeights<T>& w, const FfnWeights<acc_t<T>>& dw, FfnActs<T>& acts,
                  FfnScratch<T>& s, const T* m, const T* dout, T* dm, int tokens, double aux_scale);

}  // namespace mt
