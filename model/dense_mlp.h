// The dense MLP of a layer without experts (E = 1), forward and backward
// side by side: out = gelu(m w1^T) w2^T. Under TP each rank holds a slice
// of F (w1 column-parallel, w2 row-parallel): `cfg` here is the rank's
// share, and the output and input gradient are summed over the TP group.
#pragma once

#include "model/config.h"
#include "parallel/process_group.h"
#include "runtime/backend.h"

namespace mt {

// w1 [F, d], w2 [d, F] inside the flat weight (W = T) or gradient buffer
// (W = acc_t<T>); for experts, w1 [E/EP, F, d], w2 [E/EP, d, F].
template <typename W>
struct MlpWeights {
  W* w1 = nullptr;
  W* w2 = nullptr;
};

// What the forward pass keeps of `rows` rows (T tokens, or an expert's rows).
template <typename T>
struct MlpActs {
  MlpActs() = default;
  MlpActs(Backend<T>& be, const ModelConfig& cfg, size_t rows);
  DeviceBuffer<T> u;  // [rows, F] before GELU
  DeviceBuffer<T> g;  // [rows, F] after GELU
};

// The backward pass's work space, shared by all layers.
template <typename T>
struct MlpScratch {
  MlpScratch() = default;
  MlpScratch(Backend<T>& be, const ModelConfig& cfg, size_t rows);
  DeviceBuffer<T> dg;  // [rows, F] gradient after GELU
  DeviceBuffer<T> du;  // [rows, F] gradient before GELU
};

// out [T, d] = mlp(m [T, d]) (overwrites; summed over TP).
template <typename T>
void mlp_forward(Backend<T>& be, const ProcessGroup& tp, const ModelConfig& cfg, const MlpWeights<T>& w,
                 MlpActs<T>& a, const T* m, T* out, int tokens);

// Given dout = d loss / d out, accumulates the weight gradients into dw and
// writes the input gradient dm (overwrites; summed over TP).
template <typename T>
void mlp_backward(Backend<T>& be, const ProcessGroup& tp, const ModelConfig& cfg, const MlpWeights<T>& w,
                  const MlpWeights<acc_t<T>>& dw, const MlpActs<T>& a, MlpScratch<T>& s, const T* m, const T* dout,
                  T* dm, int tokens);

}  // namespace mt
