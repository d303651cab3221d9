// The model's parameters: one flat buffer of weights and one of gradients,
// and a table naming each tensor with its checkpoint path (docs/design.md
// section 6, without the "/model/" prefix) and logical shape. Flat buffers
// let the optimizer, the gradient norm and ZeRO-1 work on ranges.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "model/config.h"
#include "parallel/tensor_parallel.h"
#include "runtime/backend.h"

namespace mt {

struct ParamTensor {
  std::string name;            // e.g. "layers/0/wq"
  std::vector<int64_t> shape;  // logical shape, e.g. [H*hd, d]
  Shard shard;                 // this TP rank's part of it
  Block block;                 // where that part lies in the logical tensor
  size_t offset = 0;           // into the flat buffers
  size_t grad_offset = 0;      // into Parameters::grads: offset, or its place in its GradUnit's
  size_t numel = 0;            // elements held here
  bool weight_decay = false;   // only tensors of two or more dimensions decay
  bool is_norm = false;        // initialised to 1
  bool partial_grad = false;   // whole on every TP rank, gradient summed over TP
  bool is_expert = false;      // an expert's weight: split over EP, replicated over expert-DP
  double init_std = 0.0;

  bool replicated() const { return !shard.split(); }
  // Logical (whole-tensor, row-major) index of local element i.
  uint64_t logical_index(uint64_t i) const;
};

// The layers one pipeline stage holds, [begin, end) of the model's; the
// first stage also holds the embedding, the last the final norm and LM head.
struct StageSpan {
  int begin = 0, end = -1;  // end -1: every layer (one stage)
  bool first = true, last = true;
  int end_of(const ModelConfig& cfg) const { return end < 0 ? cfg.num_layers : end; }
  // Does this stage hold the tensor `name`?
  bool holds(const std::string& name, const ModelConfig& cfg) const;
};

// The span of `stage` of `stages`: an even split of num_layers, or the
// first and last stages fixed (> 0) and the rest even
// (--decoder-first/last-pipeline-num-layers). Throws naming the flags when
// the layers do not split.
StageSpan stage_span(int num_layers, int stage, int stages, int first_stage_layers, int last_stage_layers);

// The tensors of one model as tensor-parallel rank tp_rank of tp_size,
// pipeline stage `stage` and expert-parallel rank ep_rank of ep_size hold
// them (docs/design.md section 4; EP rank j holds experts [jE/EP, (j+1)E/EP)),
// in checkpoint order, with offsets back to back in that order.
std::vector<ParamTensor> param_table(const ModelConfig& cfg, int tp_rank = 0, int tp_size = 1,
                                     const StageSpan& stage = {}, int ep_rank = 0, int ep_size = 1);

// Under sequence parallelism a TP rank normalizes only its rows of the
// residual stream, so every norm gain's gradient (attn_norm, mlp_norm,
// final_norm; q_norm and k_norm are already) is a partial sum over TP.
void mark_sequence_parallel_grads(std::vector<ParamTensor>& tensors);

// Where each group of ranks shards its part of the flat buffers: one region
// of every tensor, padded to a multiple of DP; or, with expert parallelism,
// the tensors the whole DP group holds (padded to DP) followed by this EP
// rank's experts (padded to expert-DP), since ZeRO-1 shards each over the
// group that holds it. Sets the tensors' offsets.
struct FlatRegion {
  size_t begin = 0, end = 0;  // padded
  bool experts = false;       // sharded over expert-DP rather than DP
};
std::vector<FlatRegion> lay_out_regions(std::vector<ParamTensor>& tensors, int data_parallel, int expert_parallel);

// Initial value of logical element `index` of tensor `t`: a pure function of
// (seed, name, index) through Philox (docs/design.md section 3), so every layout
// starts from the same weights.
double initial_value(uint64_t seed, const ParamTensor& t, uint64_t index);

// The tensors whose gradients one piece of the backward pass writes
// together: a layer's ("layers/{l}"), the embedding ("embed"), the final
// norm with the LM head ("head"); indices into Parameters::tensors.
struct GradUnit {
  std::string name;
  std::vector<size_t> tensors;
  size_t elements = 0;
};
// The name of the unit holding tensor `tensor` ("layers/3/wq": "layers/3").
std::string grad_unit_of(const std::string& tensor);

// The weights in T (what the products read) and their gradients in
// acc_t<T> (float32 under bf16: gradients accumulate over micro-batches and
// are reduced without rounding to bf16), or, with grads_in_t
// (--grad-reduce-in-bf16), in T: then `grads` holds one GradUnit's
// gradients of one micro-batch in Acc, which the backward pass adds into
// grads_in_t, rounding once, unit by unit (add_unit_gradients).
template <typename T>
struct Parameters {
  using Acc = acc_t<T>;
  // data_parallel, expert_parallel: the flat buffers are laid out in
  // regions padded with zeros for ZeRO-1's equal shards (lay_out_regions,
  // parallel/grad_sync.h); ep_rank: which experts this rank holds.
  Parameters(Backend<T>& be, const ModelConfig& cfg, const ProcessGroup& tp = {},
             const StageSpan& stage = {}, int data_parallel = 1, int ep_rank = 0, int expert_parallel = 1,
             bool gradients_in_t = false);

  std::vector<ParamTensor> tensors;
  std::vector<FlatRegion> regions;
  std::vector<GradUnit> units;
  DeviceBuffer<T> values;    // all weights, back to back, then the padding
  DeviceBuffer<Acc> grads;   // same layout; with grads in T, [largest unit]
  DeviceBuffer<T> grads_in_t;  // with grads in T: as values; else empty
  bool has_grads_in_t() const { return grads_in_t.size() > 0; }
  // The unit named `name`; grads_in_t += its gradients in `grads` (rounded
  // once), which are zeroed for the next unit. Grads in T only.
  const GradUnit& unit(const std::string& name) const;
  void add_unit_gradients(Backend<T>& be, const GradUnit& unit);

  const ParamTensor& find(const std::string& name) const;  // throws naming the tensor
  const ParamTensor* find_or_null(const std::string& name) const;
  T* value(const std::string& name) { return values.data() + find(name).offset; }
  Acc* grad(const std::string& name) { return grads.data() + find(name).grad_offset; }
  size_t size() const;  // elements held, padding excluded
  size_t padded_size() const { return values.size(); }

  void initialise(Backend<T>& be, uint64_t seed);
  // The initial weights in E (T, or the optimizer's float32 master weights),
  // flat and padded as values.
  template <typename E>
  std::vector<E> initial_values(uint64_t seed) const;
  // Multiplies every weight by 1 + relative or 1 - relative, the sign a
  // function of `round`, the tensor and the logical index (so alike on any
  // layout). The float32 tests measure with it how far rounding differences
  // carry through a run.
  void perturb(Backend<T>& be, double relative, uint64_t round);
  // The same on a flat padded host array of the weights (E: T, or the
  // optimizer's float32 master weights).
  template <typename E>
  void perturb(E* flat, double relative, uint64_t round) const;
};

}  // namespace mt
