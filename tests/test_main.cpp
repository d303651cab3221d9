// Test entry point: starts MPI so that code under test can build a one-rank
// topology, as `moetrain` does without mpirun, and sets the thread count
// (test_util::test_threads()).
#include <gtest/gtest.h>
#include <mpi.h>

#include "runtime/threads.h"
#include "test_util.h"

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  ::testing::InitGoogleTest(&argc, argv);
  mt::set_thread_count(mt::test_util::test_threads());
  int rc = RUN_ALL_TESTS();
  MPI_Finalize();
  return rc;
}
