// One threading runtime: OpenBLAS is the OpenMP build, so BLAS and our own
// loops share one pool. A rank's default thread count is its share of the
// cores it may run on, so several ranks on one machine never oversubscribe it.
#pragma once

#include <mpi.h>

namespace mt {

// Cores this process may run on (its CPU affinity), divided among the ranks
// of `world` on the same node.
int default_thread_count(MPI_Comm world);

// Sets the OpenMP and OpenBLAS thread counts.
void set_thread_count(int threads);

// Sets `requested` threads, or (0) this rank's share of its cores; returns
// the count set.
int apply_thread_count(int requested, MPI_Comm world);

}  // namespace mt
