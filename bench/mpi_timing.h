// What the MPI benchmarks (bench_allreduce, bench_grad_sync,
// bench_expert_dispatch) share: MPI's start, their [--reps R] [--warmup W]
// NUMBERS... arguments and their usage error, and their timing: a
// repetition's time is the slowest rank's, after a barrier; the figure
// reported is the median over repetitions.
#pragma once

#include <mpi.h>

#include <algorithm>
#include <cstdio>
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

// MPI started: this rank and the world's size.
struct MpiWorld {
  int rank = 0, size = 1;
};
inline MpiWorld start_mpi(int* argc, char*** argv) {
  MPI_Init(argc, argv);
  MpiWorld w;
  MPI_Comm_rank(MPI_COMM_WORLD, &w.rank);
  MPI_Comm_size(MPI_COMM_WORLD, &w.size);
  return w;
}

// Rank 0 prints the usage; every rank ends MPI. main returns what this does.
inline int usage_exit(int rank, const char* usage) {
  if (rank == 0) std::fprintf(stderr, "usage: %s\n", usage);
  MPI_Finalize();
  return 2;
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
