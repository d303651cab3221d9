#include "model/parameters.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "parallel/grad_sync.h"
#include "parallel/pipeline_schedule.h"
#include "runtime/check.h"
#include "runtime/philox.h"

namespace mt {

StageSpan stage_span(int num_layers, int stage, int stages, int first_stage_layers, int last_stage_layers) {
  const auto layers = stage_layers(num_layers, stages, first_stage_layers, last_stage_layers);
  return {layers[stage].first, layers[stage].second, stage == 0, stage == stages - 1};
}

bool StageSpan::holds(const std::string& name, const ModelConfig& cfg) const {
  if (name == "embed") return first;
  if (name == "final_norm" || name == "lm_head") return last;
  const int layer = std::stoi(name.substr(std::string("layers/").size()));
  return layer >= begin && layer < end_of(cfg);
}

void mark_sequence_parallel_grads(std::vector<ParamTensor>& tensors) {
  for (ParamTensor& t : tensors)
    if (t.is_norm) t.partial_grad = true;
}

std::vector<ParamTensor> param_table(const ModelConfig& c, int tp_rank, int tp_size,
                                     const StageSpan& stage, int ep_rank, int ep_size) {
  const int64_t d = c.hidden_size, hd = c.head_dim(), F = c.ffn_hidden_size, E = c.num_experts;
  const double std = 0.02, out_std = 0.02 / std::sqrt(2.0 * c.num_layers);
  const bool kv_split = !tp_shape(c, tp_rank, tp_size).kv_replicated;
  MT_CHECK(ep_size == 1 || c.is_moe(),
           "--expert-model-parallel-size {} needs a mixture of experts; --num-experts is {} (a dense MLP)", ep_size, E);
  MT_CHECK(ep_size >= 1 && E % ep_size == 0, "--expert-model-parallel-size {} does not divide --num-experts {}",
           ep_size, E);
  // split_dim -1: whole on every TP rank. Experts (dimension 0 of an
  // expert tensor) split over EP as well.
  std::vector<ParamTensor> t;
  auto add = [&](std::string name, std::vector<int64_t> shape, double init_std, int split_dim, bool expert = false) {
    if (!stage.holds(name, c)) return;
    ParamTensor p;
    p.name = std::move(name);
    p.shape = std::move(shape);
    p.is_expert = expert;
    if (split_dim >= 0 && tp_size > 1) p.shard = {split_dim, tp_size, tp_rank};
    p.block = shard_block(p.shape, p.shard);
    if (expert) {
      p.block.count[0] = E / ep_size;
      p.block.offset[0] = ep_rank * (E / ep_size);
    }
    p.numel = 1;
    for (int64_t s : p.block.count) p.numel *= size_t(s);
    p.offset = t.empty() ? 0 : t.back().offset + t.back().numel;
    p.weight_decay = p.shape.size() >= 2;
    p.is_norm = init_std == 0.0;
    p.init_std = init_std;
    t.push_back(std::move(p));
  };
  add("embed", {c.vocab_size, d}, std, 0);  // vocab-parallel
  for (int l = 0; l < c.num_layers; ++l) {
    const std::string L = fmt::format("layers/{}/", l);
    add(L + "attn_norm", {d}, 0.0, -1);
    add(L + "wq", {c.num_heads * hd, d}, std, 0);  // column-parallel: heads
    add(L + "wk", {c.num_query_groups * hd, d}, std, kv_split ? 0 : -1);
    add(L + "wv", {c.num_query_groups * hd, d}, std, kv_split ? 0 : -1);
    if (!kv_split && tp_size > 1 && stage.holds(L + "wk", c))
      t[t.size() - 2].partial_grad = t.back().partial_grad = true;
    if (c.qk_layernorm && stage.holds(L + "q_norm", c)) {
      // Gains over each head, whole on every TP rank, which sees only its
      // heads: the gradients are partial sums over TP.
      add(L + "q_norm", {hd}, 0.0, -1);
      add(L + "k_norm", {hd}, 0.0, -1);
      t[t.size() - 2].partial_grad = t.back().partial_grad = tp_size > 1;
    }
    add(L + "wo", {d, c.num_heads * hd}, out_std, 1);  // row-parallel
    add(L + "mlp_norm", {d}, 0.0, -1);
    // An MLP of hidden size f under `prefix`: w1 (and SwiGLU's w3)
    // column-parallel in f, w2 row-parallel; experts' tensors have the
    // expert in dimension 0.
    auto add_mlp = [&](const std::string& prefix, int64_t f, bool experts) {
      std::vector<int64_t> in = {f, d}, out = {d, f};
      if (experts) {
        in.insert(in.begin(), E);
        out.insert(out.begin(), E);
      }
      const int at = experts ? 1 : 0;
      add(prefix + "w1", in, std, at, experts);
      if (c.swiglu) add(prefix + "w3", in, std, at, experts);
      add(prefix + "w2", out, out_std, at + 1, experts);
    };
    if (!c.is_moe_layer(l)) {
      add_mlp(L + "mlp/", F, false);
      continue;
    }
    add(L + "router", {E, d}, std, -1);
    add_mlp(L + "experts/", c.expert_ffn(), true);
    if (c.shared_expert_size > 0) add_mlp(L + "shared_expert/", c.shared_expert_size, false);
    if (c.shared_expert_gate) add(L + "shared_expert/gate", {1, d}, std, -1);
  }
  add("final_norm", {d}, 0.0, -1);
  add("lm_head", {c.vocab_size, d}, std, 0);  // vocab-parallel
  return t;
}

std::vector<FlatRegion> lay_out_regions(std::vector<ParamTensor>& tensors, int data_parallel, int expert_parallel) {
  const bool split = expert_parallel > 1;
  std::vector<FlatRegion> regions;
  size_t at = 0;
  for (const bool experts : split ? std::vector<bool>{false, true} : std::vector<bool>{false}) {
    const size_t begin = at;
    for (ParamTensor& t : tensors)
      if (!split || t.is_expert == experts) {
        t.offset = at;
        at += t.numel;
      }
    at = begin + padded_size(at - begin, experts ? data_parallel / expert_parallel : data_parallel);
    regions.push_back({begin, at, experts});
  }
  return regions;
}

uint64_t ParamTensor::logical_index(uint64_t i) const {
  // Local row-major index -> multi-index in the block -> logical row-major index.
  uint64_t logical = 0, stride = 1;
  for (int k = int(shape.size()) - 1; k >= 0; --k) {
    const uint64_t local_extent = uint64_t(block.count[k]);
    const uint64_t coord = i % local_extent + uint64_t(block.offset[k]);
    i /= local_extent;
    logical += coord * stride;
    stride *= uint64_t(shape[k]);
  }
  return logical;
}

double initial_value(uint64_t seed, const ParamTensor& t, uint64_t index) {
  if (t.is_norm) return 1.0;
  return t.init_std * philox_normal(seed, stream_id(t.name), index);
}

template <typename T>
Parameters<T>::Parameters(Backend<T>& be, const ModelConfig& cfg, const ProcessGroup& tp,
                          const StageSpan& stage, int data_parallel, int ep_rank, int expert_parallel,
                          bool gradients_in_t)
    : tensors(param_table(cfg, tp.rank, tp.size, stage, ep_rank, expert_parallel)),
      regions(lay_out_regions(tensors, data_parallel, expert_parallel)) {
  const size_t n = regions.back().end;
  values = DeviceBuffer<T>(be, n);
  for (size_t i = 0; i < tensors.size(); ++i) {
    ParamTensor& t = tensors[i];
    const std::string name = grad_unit_of(t.name);
    if (units.empty() || units.back().name != name) units.push_back({name, {}, 0});
    units.back().tensors.push_back(i);
    t.grad_offset = gradients_in_t ? units.back().elements : t.offset;
    units.back().elements += t.numel;
  }
  if (!gradients_in_t) {
    grads = DeviceBuffer<Acc>(be.acc(), n);
    return;
  }
  MT_CHECK((!std::is_same_v<T, Acc>), "gradients in bf16 (--grad-reduce-in-bf16) need --bf16");
  size_t largest = 0;
  for (const GradUnit& u : units) largest = std::max(largest, u.elements);
  grads = DeviceBuffer<Acc>(be.acc(), largest);
  grads_in_t = DeviceBuffer<T>(be, n);
}

std::string grad_unit_of(const std::string& tensor) {
  if (tensor.rfind("layers/", 0) == 0) return tensor.substr(0, tensor.find('/', 7));
  return tensor == "embed" ? "embed" : "head";
}

template <typename T>
const GradUnit& Parameters<T>::unit(const std::string& name) const {
  for (const GradUnit& u : units)
    if (u.name == name) return u;
  MT_FAIL("no gradient unit named '{}'", name);
}

template <typename T>
void Parameters<T>::add_unit_gradients(Backend<T>& be, const GradUnit& unit) {
  for (size_t i : unit.tensors) {
    const ParamTensor& t = tensors[i];
    be.add_rounded(grads_in_t.data() + t.offset, grads.data() + t.grad_offset, t.numel);
  }
  be.acc().fill(grads.data(), Acc(0), unit.elements);
}

template <typename T>
size_t Parameters<T>::size() const {
  size_t n = 0;
  for (const ParamTensor& t : tensors) n += t.numel;
  return n;
}

template <typename T>
const ParamTensor* Parameters<T>::find_or_null(const std::string& name) const {
  for (const auto& t : tensors)
    if (t.name == name) return &t;
  return nullptr;
}

template <typename T>
const ParamTensor& Parameters<T>::find(const std::string& name) const {
  const ParamTensor* t = find_or_null(name);
  MT_CHECK(t != nullptr, "no parameter named '{}'", name);
  return *t;
}

template <typename T>
template <typename E>
std::vector<E> Parameters<T>::initial_values(uint64_t seed) const {
  std::vector<E> host(values.size());
  for (const auto& t : tensors) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < t.numel; ++i) host[t.offset + i] = E(initial_value(seed, t, t.logical_index(i)));
  }
  return host;
}

// Under bf16 the weights are rounded from the float32 master weights, at
// the start as after every update.
template <typename T>
void Parameters<T>::initialise(Backend<T>& be, uint64_t seed) {
  const std::vector<Acc> master = initial_values<Acc>(seed);
  std::vector<T> host(master.begin(), master.end());
  be.from_host(values.data(), host.data(), host.size());
  be.acc().fill(grads.data(), Acc(0), grads.size());
}

template <typename T>
void Parameters<T>::perturb(Backend<T>& be, double relative, uint64_t round) {
  std::vector<T> host(values.size());
  be.to_host(host.data(), values.data(), host.size());
  perturb(host.data(), relative, round);
  be.from_host(values.data(), host.data(), host.size());
}

template <typename T>
template <typename E>
void Parameters<T>::perturb(E* flat, double relative, uint64_t round) const {
  for (const auto& t : tensors)
    for (size_t i = 0; i < t.numel; ++i) {
      const bool up = philox_words(round, stream_id(t.name), t.logical_index(i))[0] & 1;
      flat[t.offset + i] = E(double(flat[t.offset + i]) * (up ? 1.0 + relative : 1.0 - relative));
    }
}

template struct Parameters<float>;
template struct Parameters<double>;
template struct Parameters<bf16>;
template std::vector<float> Parameters<float>::initial_values<float>(uint64_t) const;
template std::vector<float> Parameters<bf16>::initial_values<float>(uint64_t) const;
template void Parameters<float>::perturb<float>(float*, double, uint64_t) const;
template void Parameters<bf16>::perturb<float>(float*, double, uint64_t) const;

}  // namespace mt
