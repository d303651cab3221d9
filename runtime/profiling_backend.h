// --profile: a Backend that times every kernel call of the backend it wraps
// and adds the time to the call's kind (products, attention, norms, ...), so
// that a run says where its steps go without a line of model code knowing.
// The CPU backend's calls return when their work is done; a device backend
// would have to synchronise in each call, which is why profiling is a flag.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "runtime/backend.h"

namespace mt {

// The operation kinds of a step's kernels (--profile's rows).
#define MT_OP_KINDS(X)                                                     \
  X(Products, "matrix products")                                          \
  X(Attention, "attention (scores, softmax, weighted sum)")               \
  X(Norms, "RMSNorm")                                                     \
  X(Rope, "RoPE")                                                         \
  X(Activation, "MLP activations (GELU, SwiGLU)")                         \
  X(Dispatch, "MoE router softmax, row dispatch, shared expert gate")     \
  X(CrossEntropy, "cross-entropy")                                        \
  X(Embedding, "embedding")                                               \
  X(Optimizer, "optimizer (AdamW, gradient norm, master weights)")        \
  X(Elementwise, "copies, fills, residual adds, transfers")

enum class OpKind {
#define MT_OP_KIND_ENUM(name, text) name,
  MT_OP_KINDS(MT_OP_KIND_ENUM)
#undef MT_OP_KIND_ENUM
      Count
};
constexpr int kOpKinds = int(OpKind::Count);
const char* op_kind_text(OpKind k);

// Seconds and calls by kind, summed since the last clear().
struct OpTimes {
  std::array<double, kOpKinds> seconds{};
  std::array<int64_t, kOpKinds> calls{};
  double total() const;
  void clear() { *this = {}; }
};

// Wraps `inner` (owned), timing each call into `times`. acc() is the
// wrapped backend's acc(), timed into the same table.
template <typename T>
std::unique_ptr<Backend<T>> make_profiling_backend(std::unique_ptr<Backend<T>> inner, OpTimes& times);

}  // namespace mt
