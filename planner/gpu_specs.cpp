#include "planner/gpu_specs.h"

#include <fmt/format.h>

#include "runtime/check.h"

namespace mt {

namespace {
constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;
constexpr double kTera = 1e12, kGiga = 1e9;
}  // namespace

// Sources: the NVIDIA A100 Tensor Core GPU datasheet (2021), the H100 and
// H200 datasheets (SXM form factor), and the DGX A100 / DGX H100 user guides
// for the node (8 GPUs, one 200 Gb/s HDR (A100) or 400 Gb/s NDR (H100, H200)
// InfiniBand NIC a GPU). NVLink: 600 GB/s (A100) and 900 GB/s (H100, H200)
// a GPU counting both directions, so 300 and 450 GB/s each way. A
// datasheet's "40GB"/"80GB" is what nvidia-smi shows in MiB (40960 MiB), so
// memory sizes are GiB.
const std::vector<GpuSpec>& gpu_specs() {
  static const std::vector<GpuSpec> table = {
      {"a100-40gb", "NVIDIA A100 SXM4 40GB", 312 * kTera, 156 * kTera, 0, 40 * kGiB, 1555 * kGiga,
       300 * kGiga, 25 * kGiga, 8},
      {"a100-80gb", "NVIDIA A100 SXM4 80GB", 312 * kTera, 156 * kTera, 0, 80 * kGiB, 2039 * kGiga,
       300 * kGiga, 25 * kGiga, 8},
      {"h100-80gb", "NVIDIA H100 SXM5 80GB", 989 * kTera, 494.5 * kTera, 1979 * kTera, 80 * kGiB,
       3350 * kGiga, 450 * kGiga, 50 * kGiga, 8},
      {"h200", "NVIDIA H200 SXM 141GB", 989 * kTera, 494.5 * kTera, 1979 * kTera, 141 * kGiB,
       4800 * kGiga, 450 * kGiga, 50 * kGiga, 8},
  };
  return table;
}

const GpuSpec& find_gpu(const std::string& name) {
  std::string known;
  for (const GpuSpec& g : gpu_specs()) {
    if (g.name == name) return g;
    known += fmt::format("{}{}", known.empty() ? "" : ", ", g.name);
  }
  MT_FAIL("--gpu {}: unknown GPU (known: {})", name, known);
}

}  // namespace mt
