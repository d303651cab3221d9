// The experts of an MoE layer on this rank (E/EP of them), forward and
// backward side by side: expert e is an MLP (model/dense_mlp.h), y =
// gelu(x w1[e]^T) w2[e]^T or with SwiGLU (silu(x w1[e]^T) * (x w3[e]^T))
// w2[e]^T, over the rows the dispatcher gave it, rows [offset[e],
// offset[e+1]) of the expert buffers. The experts' products run as one
// grouped product each (Backend::gemm_grouped, Megatron's grouped GEMM),
// with one activation over all their rows between them. Under TP each rank
// holds a slice of the experts' hidden size (--moe-ffn-hidden-size): the
// shape's F is the rank's share, and the outputs are partial sums over the
// TP group.
#pragma once

#include <cstdint>
#include <vector>

#include "model/dense_mlp.h"
#include "runtime/backend.h"

namespace mt {

// This rank's experts inside the flat weight (W = T) or gradient buffer
// (W = acc_t<T>): each expert is an MLP.
template <typename W>
using ExpertWeights = MlpWeights<W>;

// What the forward pass keeps, R rows: every row this rank's experts can
// receive (expert_rows_bound).
template <typename T>
struct ExpertActs {
  ExpertActs() = default;
  ExpertActs(Backend<T>& be, const MlpShape& s, size_t rows)
      : x(be, rows * s.d), mlp(be, s, rows), y(be, rows * s.d) {}
  DeviceBuffer<T> x;  // [R, d] inputs
  MlpActs<T> mlp;     // [R, F] the hidden rows
  DeviceBuffer<T> y;  // [R, d] outputs
};

// The backward pass's work space, shared by all layers.
template <typename T>
struct ExpertScratch {
  ExpertScratch() = default;
  ExpertScratch(Backend<T>& be, const MlpShape& s, size_t rows)
      : dy(be, rows * s.d), mlp(be, s, rows), dx(be, rows * s.d) {}
  DeviceBuffer<T> dy;  // [R, d] in: d loss / d outputs
  MlpScratch<T> mlp;   // [R, F] the hidden rows' gradients
  DeviceBuffer<T> dx;  // [R, d] out: d loss / d inputs
};

// a.y = experts(a.x) over the rows of each local expert; offset: [E/EP + 1].
template <typename T>
void experts_forward(Backend<T>& be, const MlpShape& s, const ExpertWeights<T>& w, ExpertActs<T>& a,
                     const std::vector<int32_t>& offset);

// From s.dy: accumulates the experts' weight gradients into dw and writes
// s.dx.
template <typename T>
void experts_backward(Backend<T>& be, const MlpShape& s, const ExpertWeights<T>& w,
                      const ExpertWeights<acc_t<T>>& dw, const ExpertActs<T>& a, ExpertScratch<T>& g,
                      const std::vector<int32_t>& offset);

}  // namespace mt
