#include "runtime/cpu_bf16_matmul.h"

#include <oneapi/dnnl/dnnl.h>
#include <oneapi/dnnl/dnnl.hpp>

#include <map>
#include <mutex>
#include <tuple>
#include <vector>

#include "runtime/check.h"

namespace mt {

namespace {

using dt = dnnl::memory::data_type;
using dims = dnnl::memory::dims;

// One primitive serves every row count m and inner size k of a product:
// experts receive a different number of rows each step, which is m of their
// forward and input-gradient products and k of their weight-gradient ones.
// Both are given at execution, so that no step creates a primitive (0.5 to 1
// ms each) after the first.
using Key = std::tuple<bool, bool, int, int, int, int, bool, float, float>;  // ta, tb, n, lda, ldb, ldc, float C, alpha, beta

// op(A) [m, k] and op(B) [k, n] of a row-major buffer: a transpose is a
// swap of strides.
dnnl::memory::desc matrix(dnnl::memory::dim rows, dnnl::memory::dim cols, dt type, bool transposed, int ld) {
  return dnnl::memory::desc({rows, cols}, type, transposed ? dims{1, ld} : dims{ld, 1});
}

// Rows [rows, cols] of a strided buffer into a compact float32 array.
std::vector<float> widened(const bf16* x, int rows, int cols, int ld) {
  std::vector<float> out(size_t(rows) * cols);
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < cols; ++c) out[size_t(r) * cols + c] = float(x[size_t(r) * ld + c]);
  return out;
}

// One CPU engine for the process, so that each thread's stream (below)
// outlives any one backend.
dnnl::engine& cpu_engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

}  // namespace

struct Bf16Matmul::Impl {
  dnnl::engine& engine = cpu_engine();
  std::mutex mutex;
  std::map<Key, dnnl::matmul> primitives;
  bool native = true;

  // The primitive for this product, created on first use; none when oneDNN
  // has no bf16 matmul for this CPU.
  const dnnl::matmul* primitive(const Key& key) {
    std::lock_guard<std::mutex> lock(mutex);
    if (!native) return nullptr;
    if (auto it = primitives.find(key); it != primitives.end()) return &it->second;
    const auto [ta, tb, n, lda, ldb, ldc, c_float, alpha, beta] = key;
    const dnnl::memory::dim M = DNNL_RUNTIME_DIM_VAL, K = DNNL_RUNTIME_DIM_VAL;
    dnnl::primitive_attr attr;
    if (alpha != 1.0f) attr.set_output_scales(0, {alpha});
    if (beta != 0.0f) {
      dnnl::post_ops sum;
      sum.append_sum(beta);
      attr.set_post_ops(sum);
    }
    try {
      const dnnl::matmul::desc desc(matrix(M, K, dt::bf16, ta, lda), matrix(K, n, dt::bf16, tb, ldb),
                                    matrix(M, n, c_float ? dt::f32 : dt::bf16, false, ldc));
      return &primitives.emplace(key, dnnl::matmul(dnnl::matmul::primitive_desc(desc, attr, engine))).first->second;
    } catch (const dnnl::error& e) {
      MT_CHECK(e.status == dnnl_unimplemented, "oneDNN bf16 matmul with {} columns failed: {}", n, e.what());
      native = false;  // this CPU has no bf16 matmul: widen to float32 from now on
      return nullptr;
    }
  }

  template <typename C>
  void run(Trans ta, Trans tb, int m, int n, int k, float alpha, const bf16* A, int lda, const bf16* B, int ldb,
           float beta, C* c, int ldc) {
    if (m == 0 || n == 0) return;
    const bool c_float = std::is_same_v<C, float>;
    const Key key{ta == Trans::T, tb == Trans::T, n, lda, ldb, ldc, c_float, alpha, beta};
    if (const dnnl::matmul* prim = primitive(key)) {
      thread_local dnnl::stream stream(engine);
      const dnnl::memory a(matrix(m, k, dt::bf16, ta == Trans::T, lda), engine, const_cast<bf16*>(A));
      const dnnl::memory b(matrix(k, n, dt::bf16, tb == Trans::T, ldb), engine, const_cast<bf16*>(B));
      const dnnl::memory out(matrix(m, n, c_float ? dt::f32 : dt::bf16, false, ldc), engine, c);
      prim->execute(stream, {{DNNL_ARG_SRC, a}, {DNNL_ARG_WEIGHTS, b}, {DNNL_ARG_DST, out}});
      stream.wait();
      return;
    }
    // Widened: op(A) and op(B) as stored, compact, then float32 C.
    const int a_rows = ta == Trans::N ? m : k, a_cols = ta == Trans::N ? k : m;
    const int b_rows = tb == Trans::N ? k : n, b_cols = tb == Trans::N ? n : k;
    const std::vector<float> a = widened(A, a_rows, a_cols, lda), b = widened(B, b_rows, b_cols, ldb);
    std::vector<float> out(size_t(m) * n);
    for (int i = 0; i < m; ++i)
      for (int j = 0; j < n; ++j) out[size_t(i) * n + j] = beta != 0.0f ? float(c[size_t(i) * ldc + j]) : 0.0f;
    const dnnl_status_t status = dnnl_sgemm(ta == Trans::N ? 'N' : 'T', tb == Trans::N ? 'N' : 'T', m, n, k, alpha,
                                            a.data(), a_cols, b.data(), b_cols, beta, out.data(), n);
    MT_CHECK(status == dnnl_success, "oneDNN sgemm of {} x {} x {} (widened bf16) failed", m, n, k);
    for (int i = 0; i < m; ++i)
      for (int j = 0; j < n; ++j) c[size_t(i) * ldc + j] = C(out[size_t(i) * n + j]);
  }
};

Bf16Matmul::Bf16Matmul() : impl_(std::make_unique<Impl>()) {}
Bf16Matmul::~Bf16Matmul() = default;

void Bf16Matmul::run(Trans ta, Trans tb, int m, int n, int k, float alpha, const bf16* A, int lda, const bf16* B,
                     int ldb, float beta, bf16* C, int ldc) {
  impl_->run(ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
}

void Bf16Matmul::run(Trans ta, Trans tb, int m, int n, int k, float alpha, const bf16* A, int lda, const bf16* B,
                     int ldb, float beta, float* C, int ldc) {
  impl_->run(ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
}

bool Bf16Matmul::native() const {
  // Settled by the first product: ask for one.
  impl_->primitive(Key{false, false, 16, 16, 16, 16, true, 1.0f, 0.0f});
  return impl_->native;
}

}  // namespace mt
