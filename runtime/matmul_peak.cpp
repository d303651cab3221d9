#include "runtime/matmul_peak.h"

#include <algorithm>
#include <chrono>

namespace mt {

template <typename T>
double measure_matmul_gflops(Backend<T>& be, double budget_seconds) {
  constexpr int n = 512;
  const size_t elements = size_t(n) * n;
  T* a = be.alloc(elements);
  T* b = be.alloc(elements);
  T* c = be.alloc(elements);
  be.fill(a, T(0.5f), elements);
  be.fill(b, T(0.25f), elements);
  using Clock = std::chrono::steady_clock;
  const Clock::time_point start = Clock::now();
  double best = 1e30;
  for (int i = 0; i < 2 || std::chrono::duration<double>(Clock::now() - start).count() < budget_seconds; ++i) {
    const Clock::time_point t0 = Clock::now();
    be.gemm(Trans::N, Trans::T, n, n, n, T(1), a, n, b, n, T(0), c, n);
    T probe;
    be.to_host(&probe, c, 1);  // the product is done (a device backend returns early)
    best = std::min(best, std::chrono::duration<double>(Clock::now() - t0).count());
  }
  be.free(a);
  be.free(b);
  be.free(c);
  return 2.0 * n * n * n / best / 1e9;
}

template <typename T>
double measure_job_matmul_gflops(Backend<T>& be, Communicator& world) {
  world.barrier();
  double gflops = measure_matmul_gflops(be);
  world.all_reduce_sum(&gflops, 1);
  return gflops;
}

template double measure_matmul_gflops<float>(Backend<float>&, double);
template double measure_matmul_gflops<double>(Backend<double>&, double);
template double measure_matmul_gflops<bf16>(Backend<bf16>&, double);
template double measure_job_matmul_gflops<float>(Backend<float>&, Communicator&);
template double measure_job_matmul_gflops<bf16>(Backend<bf16>&, Communicator&);

}  // namespace mt
