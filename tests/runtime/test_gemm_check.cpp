// The start-up check of the matrix product (runtime/gemm_check.h): a
// correct backend passes in both precisions; a corrupted product is refused
// with words that name the library and how to choose other kernels.
#include "runtime/gemm_check.h"

#include <gtest/gtest.h>

#include "runtime/cpu_backend.h"
#include "parallel/topology.h"
#include "test_util.h"

namespace mt {
namespace {

TEST(GemmCheck, TheCpuBackendPassesInFloatAndDouble) {
  EXPECT_EQ(gemm_check_problem(*make_cpu_backend<float>()), "");
  EXPECT_EQ(gemm_check_problem(*make_cpu_backend<double>()), "");
}

TEST(GemmCheck, AWrongProductIsNamedWithTheLibraryAndItsKernels) {
  const std::string float_problem = gemm_check_problem(*make_cpu_backend<float>(), true);
  for (const char* part : {"the cpu backend's matrix product is wrong", "where a plain loop gives", "oneDNN",
                           "kernels", "ONEDNN_MAX_CPU_ISA"})
    EXPECT_NE(float_problem.find(part), std::string::npos) << "\"" << float_problem << "\" lacks \"" << part << "\"";
  const std::string double_problem = gemm_check_problem(*make_cpu_backend<double>(), true);
  for (const char* part : {"the cpu backend's matrix product is wrong", "OpenBLAS", "kernels", "OPENBLAS_CORETYPE"})
    EXPECT_NE(double_problem.find(part), std::string::npos) << "\"" << double_problem << "\" lacks \"" << part << "\"";
}

TEST(GemmCheck, EveryRankStopsWhenOneRankIsWrong) {
  Topology topo(MPI_COMM_WORLD, TopologyConfig{1, 1});
  auto be = make_cpu_backend<float>();
  check_gemm_on_every_rank(*be, topo.world());  // passes: returns
  test_util::expect_error([&] { check_gemm_on_every_rank(*be, topo.world(), true); },
                          {"the start-up check of the matrix product failed on rank(s) 0", "set ONEDNN_MAX_CPU_ISA"});
}

}  // namespace
}  // namespace mt
