// The dense MLP, forward and backward side by side: out = gelu(m w1^T) w2^T,
// or with --swiglu out = (silu(m w1^T) * (m w3^T)) w2^T (w1 the gate, w3
// the up projection, Mixtral's names). A dense layer's MLP (E = 1, or a
// dense layer of --moe-layer-freq) and the MoE layer's shared expert are
// this; the experts are it too, row by row (model/experts.h). Under TP
// each rank holds a slice of the hidden size (w1, w3 column-parallel, w2
// row-parallel), and the output and input gradient are summed over the TP
// group.
#pragma once

#include "model/config.h"
#include "runtime/backend.h"

namespace mt {

// w1 [F, d], w3 [F, d] (SwiGLU only; null without), w2 [d, F] inside the
// flat weight (W = T) or gradient buffer (W = acc_t<T>); for experts,
// [E/EP, F, d] and [E/EP, d, F].
template <typename W>
struct MlpWeights {
  W* w1 = nullptr;
  W* w3 = nullptr;
  W* w2 = nullptr;
};

// The shape of one MLP on this rank: width d, hidden size F (this TP
// rank's share), and the activation.
struct MlpShape {
  int d = 0, F = 0;
  bool swiglu = false;
};

// What the forward pass keeps of `rows` rows (T tokens, or the experts' rows).
template <typename T>
struct MlpActs {
  MlpActs() = default;
  MlpActs(Backend<T>& be, const MlpShape& s, size_t rows);
  DeviceBuffer<T> u;   // [rows, F] before the activation (SwiGLU: the gate's)
  DeviceBuffer<T> u3;  // [rows, F] SwiGLU's up projection
  DeviceBuffer<T> g;   // [rows, F] after it
};

// The backward pass's work space, shared by all layers.
template <typename T>
struct MlpScratch {
  MlpScratch() = default;
  MlpScratch(Backend<T>& be, const MlpShape& s, size_t rows);
  DeviceBuffer<T> dg;   // [rows, F] gradient after the activation
  DeviceBuffer<T> du;   // [rows, F] before it
  DeviceBuffer<T> du3;  // [rows, F] of SwiGLU's up projection
};

// a.g = act(a.u[, a.u3]) over n = rows x F elements; backward: s.du[, s.du3]
// from s.dg (written).
template <typename T>
void activation_forward(Backend<T>& be, const MlpShape& s, MlpActs<T>& a, size_t n);
template <typename T>
void activation_backward(Backend<T>& be, const MlpShape& s, const MlpActs<T>& a, MlpScratch<T>& g, size_t n);

// out [T, d] = mlp(m [T, d]) (overwrites). Under TP, F is this rank's share
// and out its partial sum: the caller reduces it over TP (an all-reduce, or
// sequence parallelism's reduce-scatter), once for all that adds into it.
template <typename T>
void mlp_forward(Backend<T>& be, const MlpShape& s, const MlpWeights<T>& w, MlpActs<T>& a,
                 const T* m, T* out, int tokens);

// Given dout = d loss / d out, accumulates the weight gradients into dw and
// writes the input gradient dm (overwrites; a partial sum over TP, which the
// caller reduces).
template <typename T>
void mlp_backward(Backend<T>& be, const MlpShape& s, const MlpWeights<T>& w,
                  const MlpWeights<acc_t<T>>& dw, const MlpActs<T>& a, MlpScratch<T>& g, const T* m, const T* dout,
                  T* dm, int tokens);

}  // namespace mt
