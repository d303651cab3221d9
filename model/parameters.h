// The model's parameters: one flat buffer of weights and one of gradients,
// and a table naming each tensor with its checkpoint path (DESIGN.md
// section 6, without the "/model/" prefix) and logical shape. Flat buffers
// let the optimizer, the gradient norm and (later) ZeRO-1 work on ranges.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "model/config.h"
#include "runtime/backend.h"

namespace mt {

struct ParamTensor {
  std::string name;            // e.g. "layers/0/wq"
  std::vector<int64_t> shape;  // logical shape, e.g. [H*hd, d]
  size_t offset = 0;           // into the flat buffers
  size_t numel = 0;
  bool weight_decay = false;   // only tensors of two or more dimensions decay
  bool is_norm = false;        // initialised to 1
  double init_std = 0.0;
};

// The tensors of one model, in checkpoint order.
std::vector<ParamTensor> param_table(const ModelConfig& cfg);

// Initial value of element `index` of tensor `t`: a pure function of
// (seed, name, index) through Philox (DESIGN.md section 3).
double initial_value(uint64_t seed, const ParamTensor& t, uint64_t index);

template <typename T>
struct Parameters {
  Parameters(Backend<T>& be, const ModelConfig& cfg);

  std::vector<ParamTensor> tensors;
  DeviceBuffer<T> values;  // all weights, back to back
  DeviceBuffer<T> grads;   // same layout

  const ParamTensor& find(const std::string& name) const;  // throws naming the tensor
  T* value(const std::string& name) { return values.data() + find(name).offset; }
  T* grad(const std::string& name) { return grads.data() + find(name).offset; }
  size_t size() const { return values.size(); }

  void initialise(Backend<T>& be, uint64_t seed);
};

}  // namespace mt
