// One threading runtime, and ranks that share a machine share its cores.
#include <cblas.h>
#include <gtest/gtest.h>
#include <mpi.h>
#include <omp.h>

#include <thread>

#include "runtime/threads.h"

namespace mt {
namespace {

TEST(Threads, OpenBlasRunsOnOpenMp) {
  // 2 = OpenMP (0 would be sequential, 1 its own pthreads, which would fight
  // with our OpenMP loops over the cores).
  EXPECT_EQ(openblas_get_parallel(), 2);
}

TEST(Threads, RanksOnOneMachineDoNotOversubscribeIt) {
  const int mine = default_thread_count(MPI_COMM_WORLD);
  EXPECT_GE(mine, 1);
  int total = 0, world = 1;
  MPI_Allreduce(&mine, &total, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  const int cores = int(std::thread::hardware_concurrency());
  // Every test rank runs on this one machine: together they ask for at most
  // its cores (or one thread each when there are more ranks than cores).
  EXPECT_LE(total, std::max(cores, world));
}

TEST(Threads, SetThreadCountSetsBothRuntimes) {
  set_thread_count(2);
  EXPECT_EQ(omp_get_max_threads(), 2);
  EXPECT_EQ(openblas_get_num_threads(), 2);
  set_thread_count(1);
  EXPECT_EQ(omp_get_max_threads(), 1);
  EXPECT_EQ(openblas_get_num_threads(), 1);
}

}  // namespace
}  // namespace mt
