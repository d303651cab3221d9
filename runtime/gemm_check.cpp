#include "runtime/gemm_check.h"

#include <fmt/format.h>

#include <cmath>
#include <limits>
#include <vector>

#include "runtime/check.h"
#include "runtime/cpu_backend.h"

namespace mt {

namespace {

struct GemmCase {
  Trans ta, tb;
  int m, n, k;
  double beta;
};

// Odd sizes, so that every kernel's edge handling runs, and one k long
// enough for the blocked inner loop.
constexpr GemmCase kCases[] = {{Trans::N, Trans::N, 37, 29, 53, 0.0}, {Trans::N, Trans::T, 29, 41, 67, 1.0},
                               {Trans::T, Trans::N, 45, 23, 31, 1.0}, {Trans::T, Trans::T, 19, 33, 47, 0.0},
                               {Trans::N, Trans::T, 64, 48, 260, 0.0}};

// A deterministic value in [-1, 1).
double sample(uint64_t i) {
  i = (i + 0x9e3779b97f4a7c15ull) * 0xbf58476d1ce4e5b9ull;
  i ^= i >> 31;
  return double(i % 2000003) / 1000001.5 - 1.0;
}

template <typename T>
std::string case_problem(Backend<T>& be, const GemmCase& c, bool corrupt) {
  const int rows_a = c.ta == Trans::N ? c.m : c.k, cols_a = c.ta == Trans::N ? c.k : c.m;
  const int rows_b = c.tb == Trans::N ? c.k : c.n, cols_b = c.tb == Trans::N ? c.n : c.k;
  std::vector<T> a(size_t(rows_a) * cols_a), b(size_t(rows_b) * cols_b), out(size_t(c.m) * c.n);
  for (size_t i = 0; i < a.size(); ++i) a[i] = T(sample(i));
  for (size_t i = 0; i < b.size(); ++i) b[i] = T(sample(i + a.size()));
  for (size_t i = 0; i < out.size(); ++i) out[i] = T(sample(i + a.size() + b.size()));
  DeviceBuffer<T> da(be, a.size()), db(be, b.size()), dc(be, out.size());
  be.from_host(da.data(), a.data(), a.size());
  be.from_host(db.data(), b.data(), b.size());
  be.from_host(dc.data(), out.data(), out.size());
  be.gemm(c.ta, c.tb, c.m, c.n, c.k, T(1), da.data(), cols_a, db.data(), cols_b, T(c.beta), dc.data(), c.n);
  std::vector<T> got(out.size());
  be.to_host(got.data(), dc.data(), got.size());
  if (corrupt) got[got.size() / 2] += T(0.5);

  // Accumulated in acc_t<T>, then rounded to T once.
  const double eps = epsilon_of<acc_t<T>>(), out_eps = epsilon_of<T>();
  for (int i = 0; i < c.m; ++i)
    for (int j = 0; j < c.n; ++j) {
      double want = c.beta * double(out[size_t(i) * c.n + j]), magnitude = std::abs(want);
      for (int p = 0; p < c.k; ++p) {
        const double x = a[c.ta == Trans::N ? size_t(i) * cols_a + p : size_t(p) * cols_a + i];
        const double y = b[c.tb == Trans::N ? size_t(p) * cols_b + j : size_t(j) * cols_b + p];
        want += x * y;
        magnitude += std::abs(x * y);
      }
      const double error = std::abs(double(got[size_t(i) * c.n + j]) - want);
      const double bound = 2.0 * (c.k + 1) * eps * magnitude + out_eps * std::abs(want);
      if (!(error <= bound))
        return fmt::format("{}x{}x{} product ({}{}, beta {}) is {} at [{}, {}] where a plain loop gives {} "
                           "(bound {:.3g})",
                           c.m, c.n, c.k, c.ta == Trans::N ? 'N' : 'T', c.tb == Trans::N ? 'N' : 'T', c.beta,
                           double(got[size_t(i) * c.n + j]), i, j, want, bound);
    }
  return "";
}

}  // namespace

template <typename T>
std::string gemm_check_problem(Backend<T>& be, bool corrupt) {
  for (const GemmCase& c : kCases) {
    const std::string problem = case_problem(be, c, corrupt);
    if (!problem.empty())
      return fmt::format("the {} backend's matrix product is wrong: the {}; library: {}", be.name(), problem,
                         be.library());
  }
  return "";
}

template <typename T>
void check_gemm_on_every_rank(Backend<T>& be, Communicator& world, bool corrupt) {
  std::string problem = gemm_check_problem(be, corrupt);
  std::vector<int> wrong(world.size(), 0);
  wrong[world.rank()] = problem.empty() ? 0 : 1;
  world.all_reduce_sum(wrong.data(), wrong.size());
  std::string ranks;
  int first = -1;
  for (int r = 0; r < world.size(); ++r)
    if (wrong[r]) {
      ranks += fmt::format("{}{}", ranks.empty() ? "" : ", ", r);
      if (first < 0) first = r;
    }
  if (first < 0) return;
  world.broadcast(problem, first);  // every rank reports the same words
  MT_FAIL("the start-up check of the matrix product failed on rank(s) {}: {}. Choose other kernels: for "
          "float32 and bf16 set ONEDNN_MAX_CPU_ISA (for example AVX2, or AVX on any x86-64 CPU with AVX), for float64 "
          "OPENBLAS_CORETYPE (Haswell, or Sandybridge), or install newer libraries",
          ranks, problem);
}

template <typename T>
std::unique_ptr<Backend<T>> checked_cpu_backend(Communicator& world, bool corrupt_check, OpTimes* profile) {
  std::unique_ptr<Backend<T>> be = make_cpu_backend<T>();
  check_gemm_on_every_rank(*be, world, corrupt_check);
  if (profile) be = make_profiling_backend(std::move(be), *profile);
  return be;
}

template std::unique_ptr<Backend<float>> checked_cpu_backend(Communicator&, bool, OpTimes*);
template std::unique_ptr<Backend<bf16>> checked_cpu_backend(Communicator&, bool, OpTimes*);
template std::string gemm_check_problem(Backend<float>&, bool);
template std::string gemm_check_problem(Backend<double>&, bool);
template void check_gemm_on_every_rank(Backend<float>&, Communicator&, bool);
template void check_gemm_on_every_rank(Backend<double>&, Communicator&, bool);
template std::string gemm_check_problem(Backend<bf16>&, bool);
template void check_gemm_on_every_rank(Backend<bf16>&, Communicator&, bool);

}  // namespace mt
