// CPU backend: memory, matrix products and the optimizer update.
#include "runtime/cpu_backend.h"

#include <cblas.h>
#include <fmt/format.h>
#include <oneapi/dnnl/dnnl.h>
#include <oneapi/dnnl/dnnl_debug.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>

#include "runtime/check.h"
#include "runtime/cpu_bf16_matmul.h"

namespace mt {

namespace {

// 64-byte alignment keeps BLAS and vector loops on whole cache lines.
void* aligned_zeroed(size_t bytes) {
  size_t rounded = (bytes + 63) / 64 * 64;
  void* p = std::aligned_alloc(64, rounded);
  if (!p) throw std::bad_alloc();
  std::memset(p, 0, rounded);
  return p;
}

CBLAS_TRANSPOSE cblas_trans(Trans t) { return t == Trans::N ? CblasNoTrans : CblasTrans; }

std::string env_setting(const char* name) {
  const char* value = std::getenv(name);
  return fmt::format("{} {}", name, value ? fmt::format("= {}", value) : "unset");
}

const char* onednn_isa_name(dnnl_cpu_isa_t isa) {
  switch (isa) {
    case dnnl_cpu_isa_sse41: return "SSE41";
    case dnnl_cpu_isa_avx: return "AVX";
    case dnnl_cpu_isa_avx2: return "AVX2";
    case dnnl_cpu_isa_avx2_vnni: return "AVX2_VNNI";
    case dnnl_cpu_isa_avx512_core: return "AVX512_CORE";
    case dnnl_cpu_isa_avx512_core_vnni: return "AVX512_CORE_VNNI";
    case dnnl_cpu_isa_avx512_core_bf16: return "AVX512_CORE_BF16";
    case dnnl_cpu_isa_avx512_core_amx: return "AVX512_CORE_AMX";
    default: return "other";
  }
}

}  // namespace

template <typename T>
CpuBackend<T>::CpuBackend() {
  if constexpr (kMixed) {
    acc_ = std::make_unique<CpuBackend<Acc>>();
    matmul_ = std::make_unique<Bf16Matmul>();
  }
}

template <typename T>
CpuBackend<T>::~CpuBackend() = default;

template <typename T>
Backend<acc_t<T>>& CpuBackend<T>::acc() {
  if constexpr (kMixed) {
    return *acc_;
  } else {
    return *this;
  }
}

// float32 and bf16 products go to oneDNN, whose kernels run the model's
// shapes at 5-7x Debian's OpenBLAS here (bench_matmul_libraries,
// docs/benchmarks.md); float64 (the gradient checks) stays on OpenBLAS,
// which oneDNN lacks.
template <typename T>
std::string CpuBackend<T>::library() const {
  const dnnl_version_t* v = dnnl_version();
  const std::string isa = fmt::format("with the {} kernels ({})", onednn_isa_name(dnnl_get_effective_cpu_isa()),
                                      env_setting("ONEDNN_MAX_CPU_ISA"));
  if constexpr (std::is_same_v<T, bf16>) {
    return fmt::format("oneDNN {}.{}.{} {} {}", v->major, v->minor, v->patch,
                       matmul_->native() ? "bf16 matmul" : "sgemm on bf16 widened to float32 (no bf16 matmul on this CPU: slow)",
                       isa);
  } else if constexpr (std::is_same_v<T, float>) {
    return fmt::format("oneDNN {}.{}.{} sgemm {}", v->major, v->minor, v->patch, isa);
  } else {
    return fmt::format("{} with the {} kernels ({})", openblas_get_config(), openblas_get_corename(),
                       env_setting("OPENBLAS_CORETYPE"));
  }
}

template <typename T>
T* CpuBackend<T>::alloc(size_t n) {
  return static_cast<T*>(aligned_zeroed(n * sizeof(T)));
}

template <typename T>
int32_t* CpuBackend<T>::alloc_int(size_t n) {
  return static_cast<int32_t*>(aligned_zeroed(n * sizeof(int32_t)));
}

template <typename T>
void CpuBackend<T>::free(void* p) {
  std::free(p);
}

template <typename T>
void CpuBackend<T>::to_host(T* host, const T* dev, size_t n) {
  std::memcpy(host, dev, n * sizeof(T));
}

template <typename T>
void CpuBackend<T>::from_host(T* dev, const T* host, size_t n) {
  std::memcpy(dev, host, n * sizeof(T));
}

template <typename T>
void CpuBackend<T>::int_from_host(int32_t* dev, const int32_t* host, size_t n) {
  std::memcpy(dev, host, n * sizeof(int32_t));
}

template <typename T>
void CpuBackend<T>::copy(T* dst, const T* src, size_t n) {
  std::memcpy(dst, src, n * sizeof(T));
}

template <typename T>
void CpuBackend<T>::fill(T* x, T value, size_t n) {
  if constexpr (std::is_same_v<T, bf16>) {
    // Through the bits: GCC does not vectorize a loop of struct copies.
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; ++i) x[i].bits = value.bits;
  } else {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; ++i) x[i] = value;
  }
}

template <typename T>
void CpuBackend<T>::round_from_acc(T* dst, const Acc* src, size_t n) {
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < n; ++i) dst[i] = T(src[i]);
}

template <typename T>
void CpuBackend<T>::add_rounded(T* dst, const Acc* src, size_t n) {
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < n; ++i) dst[i] = T(Acc(dst[i]) + src[i]);
}

template <typename T>
void CpuBackend<T>::widen_to_acc(Acc* dst, const T* src, size_t n) {
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < n; ++i) dst[i] = Acc(src[i]);
}

template <typename T>
void CpuBackend<T>::gemm(Trans ta, Trans tb, int m, int n, int k, T alpha, const T* A, int lda,
                         const T* B, int ldb, T beta, T* C, int ldc) {
  if (m == 0 || n == 0) return;
  if constexpr (std::is_same_v<T, bf16>) {
    matmul_->run(ta, tb, m, n, k, float(alpha), A, lda, B, ldb, float(beta), C, ldc);
  } else if constexpr (std::is_same_v<T, float>) {
    const dnnl_status_t status = dnnl_sgemm(ta == Trans::N ? 'N' : 'T', tb == Trans::N ? 'N' : 'T', m, n, k,
                                            alpha, A, lda, B, ldb, beta, C, ldc);
    MT_CHECK(status == dnnl_success, "oneDNN sgemm of {} x {} x {} failed: {}", m, n, k, dnnl_status2str(status));
  } else {
    cblas_dgemm(CblasRowMajor, cblas_trans(ta), cblas_trans(tb), m, n, k, alpha, A, lda, B, ldb,
                beta, C, ldc);
  }
}

template <typename T>
void CpuBackend<T>::gemm_acc(Trans ta, Trans tb, int m, int n, int k, Acc alpha, const T* A, int lda,
                             const T* B, int ldb, Acc beta, Acc* C, int ldc) {
  if constexpr (kMixed) {
    if (m > 0 && n > 0) matmul_->run(ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
  } else {
    gemm(ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
  }
}

namespace {

// A grouped product's members cut into blocks of at most kGroupRows rows of
// C, each one single-threaded product (oneDNN and OpenBLAS run on the
// calling thread inside a parallel region): the blocks are shared out as
// the threads come free, which keeps both busy where a member of 30 rows,
// split over two threads, would leave them idle half the time. A block
// writes its own rows of C only, so the result does not depend on which
// thread ran it.
constexpr int kGroupRows = 256;

template <typename T, typename C, typename Product>
void run_grouped(Trans ta, int lda, int ldc, const std::vector<GroupMember<T, C>>& members, Product product) {
  struct Block {
    const GroupMember<T, C>* member;
    int row0, rows;
  };
  std::vector<Block> blocks;
  for (const GroupMember<T, C>& g : members)
    for (int r = 0; r < g.m; r += kGroupRows) blocks.push_back({&g, r, std::min(kGroupRows, g.m - r)});
#pragma omp parallel for schedule(dynamic, 1)
  for (size_t i = 0; i < blocks.size(); ++i) {
    const Block& blk = blocks[i];
    // Rows row0.. of op(A): rows of A, or its columns when transposed.
    const T* a = blk.member->a + (ta == Trans::N ? size_t(blk.row0) * lda : size_t(blk.row0));
    product(blk.rows, blk.member->k, a, blk.member->b, blk.member->c + size_t(blk.row0) * ldc);
  }
}

}  // namespace

template <typename T>
void CpuBackend<T>::gemm_grouped(Trans ta, Trans tb, int n, T alpha, int lda, int ldb, T beta, int ldc,
                                 const std::vector<GroupMember<T, T>>& members) {
  run_grouped(ta, lda, ldc, members, [&](int m, int k, const T* a, const T* b, T* c) {
    gemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  });
}

template <typename T>
void CpuBackend<T>::gemm_acc_grouped(Trans ta, Trans tb, int n, Acc alpha, int lda, int ldb, Acc beta, int ldc,
                                     const std::vector<GroupMember<T, Acc>>& members) {
  run_grouped(ta, lda, ldc, members, [&](int m, int k, const T* a, const T* b, Acc* c) {
    gemm_acc(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  });
}

template <typename T>
void CpuBackend<T>::acc_gemm(Trans ta, Trans tb, int m, int n, int k, Acc alpha, const Acc* A, int lda,
                             const Acc* B, int ldb, Acc beta, Acc* C, int ldc) {
  if constexpr (kMixed) {
    acc_->gemm(ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
  } else {
    gemm(ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
  }
}

template <typename T>
void CpuBackend<T>::axpy(size_t n, T alpha, const T* x, T* y) {
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < n; ++i) y[i] += alpha * x[i];
}

template <typename T>
void CpuBackend<T>::scale(size_t n, T alpha, T* x) {
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < n; ++i) x[i] *= alpha;
}

template <typename T>
double CpuBackend<T>::sum_squares(size_t n, const T* x) {
  double sum = 0.0;
#pragma omp parallel for schedule(static) reduction(+ : sum)
  for (size_t i = 0; i < n; ++i) sum += double(x[i]) * double(x[i]);
  return sum;
}

template <typename T>
void CpuBackend<T>::adamw(T* param, const T* grad, T* exp_avg, T* exp_avg_sq, size_t n, const AdamWStep& s) {
  // In Acc: bf16 storage (never the optimizer's own, which runs on acc())
  // is rounded once a step.
  const Acc b1 = Acc(s.beta1), b2 = Acc(s.beta2), decay = Acc(1.0 - s.lr * s.weight_decay);
  const Acc step_size = Acc(s.lr / s.bc1), inv_sqrt_bc2 = Acc(1.0 / std::sqrt(s.bc2)), e = Acc(s.eps);
  const Acc grad_scale = Acc(s.grad_scale);
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < n; ++i) {
    const Acc g = Acc(grad[i]) * grad_scale;
    const Acc m = b1 * Acc(exp_avg[i]) + (Acc(1) - b1) * g;
    const Acc v = b2 * Acc(exp_avg_sq[i]) + (Acc(1) - b2) * g * g;
    exp_avg[i] = T(m);
    exp_avg_sq[i] = T(v);
    param[i] = T(Acc(param[i]) * decay - step_size * m / (std::sqrt(v) * inv_sqrt_bc2 + e));
  }
}

template <typename T>
std::unique_ptr<Backend<T>> make_cpu_backend() {
  return std::make_unique<CpuBackend<T>>();
}

template class CpuBackend<float>;
template class CpuBackend<double>;
template class CpuBackend<bf16>;
template std::unique_ptr<Backend<float>> make_cpu_backend<float>();
template std::unique_ptr<Backend<double>> make_cpu_backend<double>();
template std::unique_ptr<Backend<bf16>> make_cpu_backend<bf16>();

}  // namespace mt
