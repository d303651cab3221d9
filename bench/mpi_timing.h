// What the MPI benchmarks (bench_grad_sync, bench_expert_dispatch) share:
// their [--reps R] [--warmup W] NUMBERS... arguments, and their timing: a
// repetition's time is the slowest rank's, after a barrier; the figure
// reported is the median over repetitions.
#pragma once

#include <mpi.h>

#include <algorithm>
#include <cstdlib>
#include <string>
#include <vector>

namespace mt::bench {

struct BenchArgs {
  int reps = 20, warmup = 3;
  std::vector<long long> positional;
};

inline BenchArgs parse_bench_args(int argc, char** argv) {
  BenchArgs a;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--reps" && i + 1 < argc) a.reps = std::atoi(argv[++i]);
    else if (arg == "--warmup" && i + 1 < argc) a.warmup = std::atoi(argv[++i]);
    else a.positional.push_back(std::atoll(argv[i]));
  }
  return a;
}

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
