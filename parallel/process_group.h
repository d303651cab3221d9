// One process group of the layout (TP, PP, DP, EP or expert-DP) and this
// rank's place in it, as Megatron's process-group collection hands them
// out: built by Topology (parallel/topology.h) and passed explicitly to
// what communicates over it, never global.
#pragma once

#include <cstddef>

#include "runtime/communicator.h"

namespace mt {

// A default-constructed group is a group of one: its reductions are no-ops.
struct ProcessGroup {
  Communicator* comm = nullptr;
  int rank = 0;
  int size = 1;

  template <typename T>
  void all_reduce_sum(T* x, size_t n) const {
    if (size > 1) comm->all_reduce_sum(x, n);
  }
  template <typename T>
  void all_reduce_max(T* x, size_t n) const {
    if (size > 1) comm->all_reduce_max(x, n);
  }
};

}  // namespace mt
