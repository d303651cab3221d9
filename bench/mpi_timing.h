// Timing helpers shared by the MPI benchmarks (bench_grad_sync,
// bench_expert_dispatch): a repetition's time is the slowest rank's, after
// a barrier; the figure reported is the median over repetitions.
#pragma once

#include <mpi.h>

#include <algorithm>
#include <vector>

namespace mt::bench {

inline double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// The slowest rank's time of fn(), after a barrier.
template <typename F>
double timed(F&& fn) {
  MPI_Barrier(MPI_COMM_WORLD);
  const double start = MPI_Wtime();
  fn();
  double t = MPI_Wtime() - start;
  MPI_Allreduce(MPI_IN_PLACE, &t, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  return t;
}

}  // namespace mt::bench
