// Activation recompute (Megatron's --recompute-granularity, --recompute-method
// and --recompute-num-layers): what a layer keeps between its forward and
// backward pass, and what the backward pass rebuilds. It never changes a
// result: the rebuilt activations are those the forward pass computed, bit
// for bit, because every kernel is deterministic for a given shape.
#pragma once

#include <string>
#include <vector>

namespace mt {

enum class RecomputeGranularity {
  None,       // every layer keeps everything
  Selective,  // the attention core (its output and log-sum-exp) is rebuilt from q, k, v
  Full,       // recomputed layers keep only their input and run their forward again
};
// Which layers of a pipeline stage full recompute applies to, in groups of
// num_layers: uniform: every consecutive group keeps the input of its first
// layer and is rebuilt as a whole; block: each of the stage's first
// num_layers layers keeps its own input, the others keep everything.
enum class RecomputeMethod { Uniform, Block };

struct RecomputeConfig {
  RecomputeGranularity granularity = RecomputeGranularity::None;
  RecomputeMethod method = RecomputeMethod::Uniform;
  int num_layers = 1;
};

// From the flags' values; throws naming the flag at fault.
RecomputeConfig parse_recompute(const std::string& granularity, const std::string& method, int num_layers);
std::string to_string(RecomputeGranularity g);
std::string to_string(RecomputeMethod m);

// Layers [begin, end) of a stage (counted from 0) recomputed together: the
// slot of a micro-batch keeps only the input of layer `begin`.
struct RecomputeGroup {
  int begin = 0, end = 1;
  bool recomputed = false;
  int size() const { return end - begin; }
};
// The group of each of a stage's `layers` layers.
std::vector<RecomputeGroup> recompute_groups(const RecomputeConfig& r, int layers);

}  // namespace mt
