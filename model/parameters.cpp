#include "model/parameters.h"

#include <cmath>

#include "runtime/check.h"
#include "runtime/philox.h"

namespace mt {

std::vector<ParamTensor> param_table(const ModelConfig& c) {
  const int64_t d = c.hidden_size, hd = c.head_dim(), F = c.ffn_hidden_size, E = c.num_experts;
  const double std = 0.02, out_std = 0.02 / std::sqrt(2.0 * c.num_layers);
  std::vector<ParamTensor> t;
  auto add = [&](std::string name, std::vector<int64_t> shape, double init_std) {
    ParamTensor p;
    p.name = std::move(name);
    p.shape = std::move(shape);
    p.numel = 1;
    for (int64_t s : p.shape) p.numel *= size_t(s);
    p.offset = t.empty() ? 0 : t.back().offset + t.back().numel;
    p.weight_decay = p.shape.size() >= 2;
    p.is_norm = init_std == 0.0;
    p.init_std = init_std;
    t.push_back(std::move(p));
  };
  add("embed", {c.vocab_size, d}, std);
  for (int l = 0; l < c.num_layers; ++l) {
    const std::string L = "layers/" + std::to_string(l) + "/";
    add(L + "attn_norm", {d}, 0.0);
    add(L + "wq", {c.num_heads * hd, d}, std);
    add(L + "wk", {c.num_query_groups * hd, d}, std);
    add(L + "wv", {c.num_query_groups * hd, d}, std);
    add(L + "wo", {d, c.num_heads * hd}, out_std);
    add(L + "mlp_norm", {d}, 0.0);
    if (c.is_moe()) {
      add(L + "router", {E, d}, std);
      add(L + "experts/w1", {E, F, d}, std);
      add(L + "experts/w2", {E, d, F}, out_std);
    } else {
      add(L + "mlp/w1", {F, d}, std);
      add(L + "mlp/w2", {d, F}, out_std);
    }
  }
  add("final_norm", {d}, 0.0);
  add("lm_head", {c.vocab_size, d}, std);
  return t;
}

double initial_value(uint64_t seed, const ParamTensor& t, uint64_t index) {
  if (t.is_norm) return 1.0;
  return t.init_std * philox_normal(seed, stream_id(t.name), index);
}

template <typename T>
Parameters<T>::Parameters(Backend<T>& be, const ModelConfig& cfg) : tensors(param_table(cfg)) {
  size_t n = tensors.back().offset + tensors.back().numel;
  values = DeviceBuffer<T>(be, n);
  grads = DeviceBuffer<T>(be, n);
}

template <typename T>
const ParamTensor& Parameters<T>::find(const std::string& name) const {
  for (const auto& t : tensors)
    if (t.name == name) return t;
  MT_FAIL("no parameter named '{}'", name);
}

template <typename T>
void Parameters<T>::initialise(Backend<T>& be, uint64_t seed) {
  std::vector<T> host(values.size());
  for (const auto& t : tensors) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < t.numel; ++i) host[t.offset + i] = T(initial_value(seed, t, i));
  }
  be.from_host(values.data(), host.data(), host.size());
  be.fill(grads.data(), T(0), grads.size());
}

template struct Parameters<float>;
template struct Parameters<double>;

}  // namespace mt
