#include "runtime/threads.h"

#include <cblas.h>
#include <omp.h>
#include <sched.h>

#include <algorithm>
#include <thread>

#include "runtime/check.h"

namespace mt {

int default_thread_count(MPI_Comm world) {
  MPI_Comm node;
  MPI_CHECK(MPI_Comm_split_type(world, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node));
  int local_ranks = 1;
  MPI_CHECK(MPI_Comm_size(node, &local_ranks));
  MPI_Comm_free(&node);

  int hw = int(std::max(1u, std::thread::hardware_concurrency()));
  cpu_set_t set;
  int allowed = sched_getaffinity(0, sizeof(set), &set) == 0 ? CPU_COUNT(&set) : hw;
  // Bound to fewer cores than a fair share (mpirun --bind-to core): use those.
  return std::max(1, std::min(allowed, hw / local_ranks));
}

void set_thread_count(int threads) {
  MT_CHECK(threads >= 1, "--threads must be >= 1, got {}", threads);
  omp_set_num_threads(threads);
  openblas_set_num_threads(threads);
}

int apply_thread_count(int requested, MPI_Comm world) {
  const int threads = requested > 0 ? requested : default_thread_count(world);
  set_thread_count(threads);
  return threads;
}

}  // namespace mt
