// The MoE transformer of DESIGN.md section 3 on one rank: forward and
// backward of a micro-batch, gradients accumulated into Parameters::grads.
#pragma once

#include <cstdint>
#include <vector>

#include "model/config.h"
#include "model/feed_forward.h"
#include "model/parameters.h"
#include "runtime/backend.h"

namespace mt {

// One layer's tensors inside the flat weight (or gradient) buffer.
template <typename T>
struct LayerWeights {
  T* attn_norm;  // [d]
  T* wq;         // [H*hd, d]
  T* wk;         // [G*hd, d]
  T* wv;         // [G*hd, d]
  T* wo;         // [d, H*hd]
  T* mlp_norm;   // [d]
  FfnWeights<T> ffn;
};

// What one layer keeps from the forward pass; tokens T = B * S; heads, kv
// heads and F are this tensor-parallel rank's share.
template <typename T>
struct LayerActs {
  LayerActs(Backend<T>& be, const ModelConfig& cfg, const TpShape& tp, int batch);
  DeviceBuffer<T> x;          // [T, d] residual stream entering the layer
  DeviceBuffer<T> a;          // [T, d] attn_norm(x)
  DeviceBuffer<T> rstd_attn;  // [T]
  DeviceBuffer<T> q;          // [T, Hl*hd] after RoPE
  DeviceBuffer<T> k, v;       // [T, Gl*hd] (k after RoPE)
  DeviceBuffer<T> probs;      // [B, Hl, S, S]
  DeviceBuffer<T> o;          // [T, Hl*hd] attention output, before wo
  DeviceBuffer<T> h;          // [T, d] x + o wo^T
  DeviceBuffer<T> m;          // [T, d] mlp_norm(h)
  DeviceBuffer<T> rstd_mlp;   // [T]
  FfnActs<T> ffn;
};

// Everything one micro-batch keeps between its forward and backward pass.
template <typename T>
struct Activations {
  Activations(Backend<T>& be, const ModelConfig& cfg, const TpShape& tp, int batch);
  int batch;
  DeviceBuffer<T, int32_t> inputs, targets;  // [T]
  std::vector<LayerActs<T>> layers;
  DeviceBuffer<T> out;         // [T, d] output of the last layer
  DeviceBuffer<T> hf;          // [T, d] final_norm(out)
  DeviceBuffer<T> rstd_final;  // [T]
  DeviceBuffer<T> logits;      // [T, V/TP] this rank's vocabulary slice
  DeviceBuffer<T> losses;      // [T] per-token cross-entropy
  DeviceBuffer<T> ce_scratch;  // [3 T]
};

struct MicroBatchLoss {
  double ce_sum = 0.0;  // summed over the micro-batch's tokens
  double aux = 0.0;     // summed over layers
  int64_t tokens = 0;
};

template <typename T>
class Transformer {
 public:
  // micro_batch: the largest batch forward() will be given. tp: this rank's
  // tensor-parallel group (default: one rank).
  Transformer(Backend<T>& be, const ModelConfig& cfg, int micro_batch, const TensorParallel& tp = {});

  const ModelConfig& config() const { return cfg_; }
  Parameters<T>& params() { return params_; }
  Backend<T>& backend() { return be_; }

  // tokens: host [B, S+1]; inputs are the first S of each row, targets the
  // last S. Ids must be below the vocabulary size (checked by the data side).
  MicroBatchLoss forward(const int32_t* tokens, int B);
  // Forward, then backward of  ce_scale * sum(CE) + aux_scale * sum(aux),
  // accumulated into params().grads. Gradients of tensors that are whole on
  // every TP rank but see only part of the heads (wk, wv when G < TP) stay
  // partial until reduce_partial_grads(), called once a step.
  MicroBatchLoss forward_backward(const int32_t* tokens, int B, double ce_scale, double aux_scale);
  // Sums the partial gradients over the TP group (a no-op on one rank).
  void reduce_partial_grads();

 private:
  MicroBatchLoss run(const int32_t* tokens, int B, bool backward, double ce_scale, double aux_scale);
  // Reads acts_.layers[l].x, writes the layer's output; returns its aux loss.
  double layer_forward(int l, T* out);
  // dx: in d loss / d output of layer l, out d loss / d input.
  void layer_backward(int l, T* dx, double aux_scale);
  AttentionShape attention_shape() const;  // of the micro-batch in flight
  // Pointers into the flat buffers of the tensors named `layers/{l}/...`.
  LayerWeights<T> layer_tensors(int l, bool grad);

  Backend<T>& be_;
  ModelConfig cfg_;
  TensorParallel tp_;
  TpShape tps_;
  ModelConfig ffn_cfg_;  // the FFN block's view: this rank's share of F
  int max_batch_;
  int batch_ = 0;  // of the micro-batch in flight
  Parameters<T> params_;
  std::vector<LayerWeights<T>> weights_, grads_;  // [L], resolved once
  Activations<T> acts_;
  FfnScratch<T> ffn_scratch_;
  // [T, *] gradients of the backward pass
  DeviceBuffer<T> ffn_out_;  // [T, d]
  DeviceBuffer<T> dres_, dh_, da_, dq_, dk_, dv_, do_, dm_, dlogits_, dhf_;
};

extern template class Transformer<float>;
extern template class Transformer<double>;

}  // namespace mt
