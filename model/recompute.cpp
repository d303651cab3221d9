#include "model/recompute.h"

#include <algorithm>

#include "runtime/check.h"

namespace mt {

RecomputeConfig parse_recompute(const std::string& granularity, const std::string& method, int num_layers) {
  RecomputeConfig r;
  if (granularity == "none") {
    r.granularity = RecomputeGranularity::None;
  } else if (granularity == "selective") {
    r.granularity = RecomputeGranularity::Selective;
  } else if (granularity == "full") {
    r.granularity = RecomputeGranularity::Full;
  } else {
    MT_FAIL("--recompute-granularity must be none, selective or full, got '{}'", granularity);
  }
  if (method == "uniform") {
    r.method = RecomputeMethod::Uniform;
  } else if (method == "block") {
    r.method = RecomputeMethod::Block;
  } else {
    MT_FAIL("--recompute-method must be uniform or block, got '{}'", method);
  }
  MT_CHECK(num_layers >= 1, "--recompute-num-layers must be >= 1, got {}", num_layers);
  r.num_layers = num_layers;
  return r;
}

std::string to_string(RecomputeGranularity g) {
  switch (g) {
    case RecomputeGranularity::Selective: return "selective";
    case RecomputeGranularity::Full: return "full";
    default: return "none";
  }
}

std::string to_string(RecomputeMethod m) { return m == RecomputeMethod::Block ? "block" : "uniform"; }

std::vector<RecomputeGroup> recompute_groups(const RecomputeConfig& r, int layers) {
  std::vector<RecomputeGroup> groups(layers);
  for (int l = 0; l < layers; ++l) {
    RecomputeGroup& g = groups[l];
    if (r.granularity != RecomputeGranularity::Full) {
      g = {l, l + 1, false};
    } else if (r.method == RecomputeMethod::Uniform) {
      const int begin = l / r.num_layers * r.num_layers;
      g = {begin, std::min(begin + r.num_layers, layers), true};
    } else {
      g = {l, l + 1, l < r.num_layers};
    }
  }
  return groups;
}

}  // namespace mt
