// The GPUs `moetrain plan` knows (--gpu): datasheet figures of the SXM
// parts, and the links of the DGX node each sits in. Plain numbers: the
// planner's cost model (planner/plan.h) reads nothing else about a GPU.
#pragma once

#include <string>
#include <vector>

namespace mt {

struct GpuSpec {
  std::string name;         // the --gpu value, e.g. "h100-80gb"
  std::string description;  // e.g. "NVIDIA H100 SXM5 80GB"
  // Dense tensor-core peaks in FLOP/s (no 2:4 sparsity): 16-bit (bf16 and
  // fp16 alike), TF32 (what fp32 training runs on), and fp8 (0: none).
  double peak_flops_16bit = 0;
  double peak_flops_tf32 = 0;
  double peak_flops_fp8 = 0;
  double memory_bytes = 0;      // HBM
  double memory_bandwidth = 0;  // HBM bytes/s
  // Bytes/s one GPU can send while it also receives (one direction):
  // NVLink inside a node, the network (one InfiniBand NIC a GPU) between nodes.
  double nvlink_bandwidth = 0;
  double network_bandwidth = 0;
  int gpus_per_node = 8;
};

// The built-in table: a100-40gb, a100-80gb, h100-80gb, h200.
const std::vector<GpuSpec>& gpu_specs();

// Throws naming --gpu and the known names when `name` is not in the table.
const GpuSpec& find_gpu(const std::string& name);

}  // namespace mt
