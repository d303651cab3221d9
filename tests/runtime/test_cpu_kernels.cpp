// Every CpuBackend kernel against a naive loop written here, for float and
// double, on small odd sizes. Backward kernels are checked against central
// finite differences of a naive double forward (and, in double, of the
// kernel's own forward), starting from non-zero gradient buffers because
// gradient kernels accumulate (+=).
#include "runtime/cpu_backend.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

namespace mt {
namespace {

using Vec = std::vector<double>;

template <typename T>
std::vector<T> random_vec(std::mt19937& rng, size_t n, double lo = -1.0, double hi = 1.0) {
  std::uniform_real_distribution<double> u(lo, hi);
  std::vector<T> v(n);
  for (auto& x : v) x = T(u(rng));
  return v;
}

template <typename T>
Vec to_double(const std::vector<T>& v) {
  return Vec(v.begin(), v.end());
}

// Tolerance of a kernel result against a double reference computed from the
// same (T-rounded) inputs.
template <typename T>
double kernel_tol() {
  return std::is_same_v<T, float> ? 2e-6 : 1e-13;
}
// Tolerance of an analytic gradient against central finite differences.
template <typename T>
double fd_tol() {
  return std::is_same_v<T, float> ? 2e-5 : 1e-7;
}

template <typename T>
void expect_close(const std::vector<T>& actual, const Vec& expected, double tol,
                  const std::string& what) {
  ASSERT_EQ(actual.size(), expected.size()) << what;
  for (size_t i = 0; i < expected.size(); ++i)
    EXPECT_NEAR(double(actual[i]), expected[i], tol * std::max(1.0, std::abs(expected[i])))
        << what << " [" << i << "]";
}

double dot(const Vec& a, const Vec& b) {
  double s = 0.0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

// Central differences of a scalar function of x.
Vec fd_grad(const std::function<double(const Vec&)>& f, Vec x, double h = 1e-6) {
  Vec g(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    const double x0 = x[i];
    x[i] = x0 + h;
    const double fp = f(x);
    x[i] = x0 - h;
    const double fm = f(x);
    x[i] = x0;
    g[i] = (fp - fm) / (2 * h);
  }
  return g;
}

Vec add(const Vec& a, const Vec& b) {
  Vec c(a.size());
  for (size_t i = 0; i < a.size(); ++i) c[i] = a[i] + b[i];
  return c;
}

// --- naive references (double) ----------------------------------------------

Vec ref_rmsnorm(const Vec& x, const Vec& g, int n, int d, double eps, Vec* rstd = nullptr) {
  Vec out(size_t(n) * d);
  if (rstd) rstd->assign(n, 0.0);
  for (int i = 0; i < n; ++i) {
    double ms = 0.0;
    for (int j = 0; j < d; ++j) ms += x[i * d + j] * x[i * d + j];
    ms /= d;
    const double r = 1.0 / std::sqrt(ms + eps);
    if (rstd) (*rstd)[i] = r;
    for (int j = 0; j < d; ++j) out[i * d + j] = x[i * d + j] * r * g[j];
  }
  return out;
}

// docs/design.md section 3: rotate-half, theta_i = theta^(-2i/hd), position = row % seq.
Vec ref_rope(const Vec& x, int batch, int seq, int heads, int hd, double theta) {
  Vec out = x;
  const int half = hd / 2;
  for (int r = 0; r < batch * seq; ++r) {
    const int p = r % seq;
    for (int h = 0; h < heads; ++h) {
      const size_t base = (size_t(r) * heads + h) * hd;
      for (int i = 0; i < half; ++i) {
        const double th = std::pow(theta, -2.0 * i / hd);
        const double c = std::cos(p * th), s = std::sin(p * th);
        const double a = x[base + i], b = x[base + i + half];
        out[base + i] = a * c - b * s;
        out[base + i + half] = a * s + b * c;
      }
    }
  }
  return out;
}

// Causal attention; query head j reads kv head j / (H / G).
// The whole model's heads in one call.
AttentionShape whole_heads(int B, int S, int H, int G, int hd) {
  AttentionShape a;
  a.batch = B;
  a.seq = S;
  a.heads = H;
  a.kv_heads = G;
  a.head_dim = hd;
  a.heads_per_kv = H / G;
  return a;
}

Vec ref_attention(const Vec& q, const Vec& k, const Vec& v, int B, int S, int H, int G, int hd,
                  Vec* probs = nullptr) {
  const int qs = H * hd, ks = G * hd;
  Vec out(size_t(B) * S * qs, 0.0);
  if (probs) probs->assign(size_t(B) * H * S * S, 0.0);
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < H; ++h) {
      const int g = h / (H / G);
      for (int i = 0; i < S; ++i) {
        Vec s(i + 1);
        double mx = -std::numeric_limits<double>::infinity();
        for (int j = 0; j <= i; ++j) {
          double acc = 0.0;
          for (int c = 0; c < hd; ++c)
            acc += q[(size_t(b) * S + i) * qs + h * hd + c] * k[(size_t(b) * S + j) * ks + g * hd + c];
          s[j] = acc / std::sqrt(double(hd));
          mx = std::max(mx, s[j]);
        }
        double sum = 0.0;
        for (int j = 0; j <= i; ++j) sum += (s[j] = std::exp(s[j] - mx));
        for (int j = 0; j <= i; ++j) {
          s[j] /= sum;
          if (probs) (*probs)[((size_t(b) * H + h) * S + i) * S + j] = s[j];
          for (int c = 0; c < hd; ++c)
            out[(size_t(b) * S + i) * qs + h * hd + c] += s[j] * v[(size_t(b) * S + j) * ks + g * hd + c];
        }
      }
    }
  return out;
}

double ref_gelu(double x) {
  const double c = std::sqrt(2.0 / M_PI);
  return 0.5 * x * (1.0 + std::tanh(c * (x + 0.044715 * x * x * x)));
}

Vec ref_softmax(const Vec& x, int n, int c) {
  Vec p(x.size());
  for (int i = 0; i < n; ++i) {
    double mx = x[i * c];
    for (int j = 1; j < c; ++j) mx = std::max(mx, x[i * c + j]);
    double sum = 0.0;
    for (int j = 0; j < c; ++j) sum += std::exp(x[i * c + j] - mx);
    for (int j = 0; j < c; ++j) p[i * c + j] = std::exp(x[i * c + j] - mx) / sum;
  }
  return p;
}

// --- fixture ------------------------------------------------------------------

template <typename T>
class CpuKernels : public ::testing::Test {
 protected:
  CpuBackend<T> be;
  std::mt19937 rng{20240611};
  std::vector<T> rnd(size_t n, double lo = -1.0, double hi = 1.0) {
    return random_vec<T>(rng, n, lo, hi);
  }
};

using Types = ::testing::Types<float, double>;
TYPED_TEST_SUITE(CpuKernels, Types);

TYPED_TEST(CpuKernels, MemoryHelpers) {
  using T = TypeParam;
  auto& be = this->be;
  T* a = be.alloc(13);
  for (int i = 0; i < 13; ++i) EXPECT_EQ(a[i], T(0)) << "alloc zero-fills";
  int32_t* ai = be.alloc_int(5);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(ai[i], 0);
  std::vector<T> h = this->rnd(13), back(13);
  be.from_host(a, h.data(), 13);
  be.to_host(back.data(), a, 13);
  EXPECT_EQ(back, h);
  T* b = be.alloc(13);
  be.copy(b, a, 13);
  be.to_host(back.data(), b, 13);
  EXPECT_EQ(back, h);
  be.fill(b, T(2.5), 13);
  be.to_host(back.data(), b, 13);
  for (T x : back) EXPECT_EQ(x, T(2.5));
  std::vector<int32_t> ih = {3, -1, 7, 0, 9}, iback(5);
  be.int_from_host(ai, ih.data(), 5);
  std::copy(ai, ai + 5, iback.begin());
  EXPECT_EQ(iback, ih);
  be.free(a);
  be.free(b);
  be.free(ai);
}

TYPED_TEST(CpuKernels, GemmAllTransposesWithStridesAndBeta) {
  using T = TypeParam;
  const int m = 5, n = 7, k = 3;
  const T alpha = T(0.7), beta = T(-0.3);
  for (Trans ta : {Trans::N, Trans::T})
    for (Trans tb : {Trans::N, Trans::T}) {
      // op(A) is [m, k], op(B) is [k, n]; every leading dimension is padded.
      const int a_rows = ta == Trans::N ? m : k, a_cols = ta == Trans::N ? k : m;
      const int b_rows = tb == Trans::N ? k : n, b_cols = tb == Trans::N ? n : k;
      const int lda = a_cols + 2, ldb = b_cols + 3, ldc = n + 2;
      std::vector<T> A = this->rnd(size_t(a_rows) * lda), B = this->rnd(size_t(b_rows) * ldb),
                     C = this->rnd(size_t(m) * ldc);
      auto opA = [&](int i, int l) {
        return double(ta == Trans::N ? A[i * lda + l] : A[l * lda + i]);
      };
      auto opB = [&](int l, int j) {
        return double(tb == Trans::N ? B[l * ldb + j] : B[j * ldb + l]);
      };
      Vec expected = to_double(C);  // padding columns must stay as they were
      for (int i = 0; i < m; ++i)
        for (int j = 0; j < n; ++j) {
          double acc = 0.0;
          for (int l = 0; l < k; ++l) acc += opA(i, l) * opB(l, j);
          expected[i * ldc + j] = double(alpha) * acc + double(beta) * double(C[i * ldc + j]);
        }
      this->be.gemm(ta, tb, m, n, k, alpha, A.data(), lda, B.data(), ldb, beta, C.data(), ldc);
      expect_close(C, expected, 4 * kernel_tol<T>(),
                   std::string("gemm ta=") + (ta == Trans::N ? "N" : "T") +
                       " tb=" + (tb == Trans::N ? "N" : "T"));
    }
}

TYPED_TEST(CpuKernels, GemmBetaZeroOverwrites) {
  using T = TypeParam;
  const int m = 3, n = 5, k = 7;
  std::vector<T> A = this->rnd(m * k), B = this->rnd(k * n);
  std::vector<T> C(m * n, T(1e6));
  Vec expected(m * n, 0.0);
  for (int i = 0; i < m; ++i)
    for (int j = 0; j < n; ++j)
      for (int l = 0; l < k; ++l) expected[i * n + j] += double(A[i * k + l]) * B[l * n + j];
  this->be.gemm(Trans::N, Trans::N, m, n, k, T(1), A.data(), k, B.data(), n, T(0), C.data(), n);
  expect_close(C, expected, 4 * kernel_tol<T>(), "gemm beta=0");
}

TYPED_TEST(CpuKernels, AxpyScaleSumSquares) {
  using T = TypeParam;
  const size_t n = 11;
  std::vector<T> x = this->rnd(n), y = this->rnd(n);
  Vec expected(n);
  for (size_t i = 0; i < n; ++i) expected[i] = double(y[i]) + double(T(-1.3)) * double(x[i]);
  this->be.axpy(n, T(-1.3), x.data(), y.data());
  expect_close(y, expected, kernel_tol<T>(), "axpy");

  for (size_t i = 0; i < n; ++i) expected[i] = double(x[i]) * double(T(0.37));
  std::vector<T> xs = x;
  this->be.scale(n, T(0.37), xs.data());
  expect_close(xs, expected, kernel_tol<T>(), "scale");

  double ss = 0.0;
  for (T v : x) ss += double(v) * double(v);
  EXPECT_NEAR(this->be.sum_squares(n, x.data()), ss, 1e-14 * ss);  // summed in double for any T
}

TYPED_TEST(CpuKernels, EmbeddingForwardAndAccumulatingBackward) {
  using T = TypeParam;
  const int V = 6, d = 7;
  const std::vector<int32_t> tokens = {3, 1, 3, 0, 5, 3, 1, 2, 3};  // repeats accumulate
  const int n = int(tokens.size());
  std::vector<T> table = this->rnd(V * d), out(n * d, T(-9));
  this->be.embedding_forward(out.data(), table.data(), tokens.data(), n, d, 0, V);
  for (int t = 0; t < n; ++t)
    for (int j = 0; j < d; ++j) EXPECT_EQ(out[t * d + j], table[tokens[t] * d + j]);

  std::vector<T> dout = this->rnd(n * d), dtable = this->rnd(V * d);
  Vec expected = to_double(dtable);
  for (int t = 0; t < n; ++t)
    for (int j = 0; j < d; ++j) expected[tokens[t] * d + j] += double(dout[t * d + j]);
  this->be.embedding_backward(dtable.data(), dout.data(), tokens.data(), n, d, 0, V);
  expect_close(dtable, expected, 4 * kernel_tol<T>(), "embedding_backward");
}

TYPED_TEST(CpuKernels, EmbeddingOfAVocabularySlice) {
  using T = TypeParam;
  const int d = 3, start = 2, rows = 3;  // the slice holds tokens 2, 3, 4
  const std::vector<int32_t> tokens = {3, 1, 4, 0, 5, 2, 3};
  const int n = int(tokens.size());
  std::vector<T> slice = this->rnd(rows * d), out(n * d, T(-9));
  this->be.embedding_forward(out.data(), slice.data(), tokens.data(), n, d, start, rows);
  for (int t = 0; t < n; ++t) {
    const bool inside = tokens[t] >= start && tokens[t] < start + rows;
    for (int j = 0; j < d; ++j)
      EXPECT_EQ(out[t * d + j], inside ? slice[(tokens[t] - start) * d + j] : T(0)) << t;
  }
  std::vector<T> dout = this->rnd(n * d), dslice(rows * d, T(0));
  Vec expected(rows * d, 0.0);
  for (int t = 0; t < n; ++t)
    if (tokens[t] >= start && tokens[t] < start + rows)
      for (int j = 0; j < d; ++j) expected[(tokens[t] - start) * d + j] += double(dout[t * d + j]);
  this->be.embedding_backward(dslice.data(), dout.data(), tokens.data(), n, d, start, rows);
  expect_close(dslice, expected, 4 * kernel_tol<T>(), "embedding_backward of a slice");
}

TYPED_TEST(CpuKernels, RmsnormForward) {
  using T = TypeParam;
  const int n = 5, d = 7;
  const double eps = 0.05;  // large, so that where eps goes matters
  std::vector<T> x = this->rnd(n * d), g = this->rnd(d, 0.5, 1.5), out(n * d), rstd(n);
  this->be.rmsnorm_forward(out.data(), rstd.data(), x.data(), g.data(), n, d, T(eps));
  Vec ref_rstd;
  Vec expected = ref_rmsnorm(to_double(x), to_double(g), n, d, double(T(eps)), &ref_rstd);
  expect_close(out, expected, 2 * kernel_tol<T>(), "rmsnorm out");
  expect_close(rstd, ref_rstd, 2 * kernel_tol<T>(), "rmsnorm rstd");
}

TYPED_TEST(CpuKernels, RmsnormBackwardMatchesFiniteDifferencesAndAccumulates) {
  using T = TypeParam;
  const int n = 5, d = 7;
  const double eps = 0.05;
  std::vector<T> x = this->rnd(n * d), g = this->rnd(d, 0.5, 1.5), out(n * d), rstd(n);
  std::vector<T> dout = this->rnd(n * d);
  this->be.rmsnorm_forward(out.data(), rstd.data(), x.data(), g.data(), n, d, T(eps));
  std::vector<T> dx = this->rnd(n * d), dg = this->rnd(d);
  const Vec dx0 = to_double(dx), dg0 = to_double(dg);
  this->be.rmsnorm_backward(dx.data(), dg.data(), dout.data(), x.data(), g.data(), rstd.data(), n,
                            d);
  const Vec xd = to_double(x), gd = to_double(g), w = to_double(dout);
  const double e = double(T(eps));
  Vec fdx = fd_grad([&](const Vec& xx) { return dot(ref_rmsnorm(xx, gd, n, d, e), w); }, xd);
  Vec fdg = fd_grad([&](const Vec& gg) { return dot(ref_rmsnorm(xd, gg, n, d, e), w); }, gd);
  expect_close(dx, add(dx0, fdx), fd_tol<T>(), "rmsnorm dx");
  expect_close(dg, add(dg0, fdg), fd_tol<T>(), "rmsnorm dg");
}

TEST(CpuKernelsDouble, RmsnormBackwardMatchesFiniteDifferencesOfKernelForward) {
  CpuBackend<double> be;
  std::mt19937 rng(5);
  const int n = 5, d = 7;
  const double eps = 1e-5;
  Vec x = random_vec<double>(rng, n * d), g = random_vec<double>(rng, d, 0.5, 1.5);
  Vec w = random_vec<double>(rng, n * d), out(n * d), rstd(n);
  auto loss = [&](const Vec& xx, const Vec& gg) {
    Vec o(n * d), r(n);
    be.rmsnorm_forward(o.data(), r.data(), xx.data(), gg.data(), n, d, eps);
    return dot(o, w);
  };
  be.rmsnorm_forward(out.data(), rstd.data(), x.data(), g.data(), n, d, eps);
  Vec dx(n * d, 0.0), dg(d, 0.0);
  be.rmsnorm_backward(dx.data(), dg.data(), w.data(), x.data(), g.data(), rstd.data(), n, d);
  expect_close(dx, fd_grad([&](const Vec& xx) { return loss(xx, g); }, x), 1e-7, "dx");
  expect_close(dg, fd_grad([&](const Vec& gg) { return loss(x, gg); }, g), 1e-7, "dg");
}

TYPED_TEST(CpuKernels, RopeForwardMatchesFormula) {
  using T = TypeParam;
  const int batch = 2, seq = 5, heads = 3, hd = 8;
  for (double theta : {10000.0, 7.0}) {
    std::vector<T> x = this->rnd(size_t(batch) * seq * heads * hd);
    const Vec expected = ref_rope(to_double(x), batch, seq, heads, hd, theta);
    std::vector<T> y = x;
    this->be.rope_forward(y.data(), batch, seq, heads, hd, T(theta));
    expect_close(y, expected, 4 * kernel_tol<T>(), "rope theta=" + std::to_string(theta));
    // Position restarts at 0 in every sample: rows 0 and seq are left as they are.
    for (int r : {0, seq})
      for (int c = 0; c < heads * hd; ++c)
        EXPECT_EQ(y[size_t(r) * heads * hd + c], x[size_t(r) * heads * hd + c]) << "row " << r;
  }
}

TYPED_TEST(CpuKernels, RopeBackwardIsTheTranspose) {
  using T = TypeParam;
  const int batch = 2, seq = 5, heads = 3, hd = 6;
  const T theta = T(10000);
  const size_t N = size_t(batch) * seq * heads * hd;
  std::vector<T> x = this->rnd(N), y = this->rnd(N);
  std::vector<T> rx = x, rty = y;
  this->be.rope_forward(rx.data(), batch, seq, heads, hd, theta);
  this->be.rope_backward(rty.data(), batch, seq, heads, hd, theta);
  // dot(R x, y) == dot(x, R^T y)
  const double lhs = dot(to_double(rx), to_double(y)), rhs = dot(to_double(x), to_double(rty));
  EXPECT_NEAR(lhs, rhs, 20 * kernel_tol<T>() * (1 + std::abs(lhs)));
  // R is orthogonal, so backward(forward(x)) == x.
  this->be.rope_backward(rx.data(), batch, seq, heads, hd, theta);
  expect_close(rx, to_double(x), 4 * kernel_tol<T>(), "R^T R x");
}

TYPED_TEST(CpuKernels, AttentionForwardMatchesNaive) {
  using T = TypeParam;
  const int B = 2, S = 5, H = 4, hd = 6;
  for (int G : {1, 2, 4}) {
    SCOPED_TRACE("G=" + std::to_string(G));
    std::vector<T> q = this->rnd(size_t(B) * S * H * hd, -2, 2),
                   k = this->rnd(size_t(B) * S * G * hd, -2, 2),
                   v = this->rnd(size_t(B) * S * G * hd);
    std::vector<T> out(q.size(), T(-7)), probs(size_t(B) * H * S * S, T(0.5));  // garbage in
    Vec ref_probs;
    const Vec expected =
        ref_attention(to_double(q), to_double(k), to_double(v), B, S, H, G, hd, &ref_probs);
    this->be.attention_forward(out.data(), probs.data(), q.data(), k.data(), v.data(),
                               whole_heads(B, S, H, G, hd));
    expect_close(out, expected, 8 * kernel_tol<T>(), "attention out");
    expect_close(probs, ref_probs, 8 * kernel_tol<T>(), "attention probs (0 above the diagonal)");
  }
}

TYPED_TEST(CpuKernels, AttentionBackwardMatchesFiniteDifferencesAndAccumulates) {
  using T = TypeParam;
  const int B = 2, S = 5, H = 4, hd = 6;
  for (int G : {1, 2, 4}) {
    SCOPED_TRACE("G=" + std::to_string(G));
    std::vector<T> q = this->rnd(size_t(B) * S * H * hd, -2, 2),
                   k = this->rnd(size_t(B) * S * G * hd, -2, 2),
                   v = this->rnd(size_t(B) * S * G * hd);
    std::vector<T> dout = this->rnd(q.size());
    std::vector<T> out(q.size()), probs(size_t(B) * H * S * S);
    this->be.attention_forward(out.data(), probs.data(), q.data(), k.data(), v.data(),
                               whole_heads(B, S, H, G, hd));
    std::vector<T> dq = this->rnd(q.size()), dk = this->rnd(k.size()), dv = this->rnd(v.size());
    const Vec dq0 = to_double(dq), dk0 = to_double(dk), dv0 = to_double(dv);
    this->be.attention_backward(dq.data(), dk.data(), dv.data(), dout.data(), probs.data(),
                                q.data(), k.data(), v.data(), whole_heads(B, S, H, G, hd));
    const Vec qd = to_double(q), kd = to_double(k), vd = to_double(v), w = to_double(dout);
    auto f = [&](const Vec& qq, const Vec& kk, const Vec& vv) {
      return dot(ref_attention(qq, kk, vv, B, S, H, G, hd), w);
    };
    expect_close(dq, add(dq0, fd_grad([&](const Vec& x) { return f(x, kd, vd); }, qd)),
                 fd_tol<T>(), "dq");
    expect_close(dk, add(dk0, fd_grad([&](const Vec& x) { return f(qd, x, vd); }, kd)),
                 fd_tol<T>(), "dk");
    expect_close(dv, add(dv0, fd_grad([&](const Vec& x) { return f(qd, kd, x); }, vd)),
                 fd_tol<T>(), "dv");
  }
}

TEST(CpuKernelsDouble, AttentionBackwardMatchesFiniteDifferencesOfKernelForward) {
  CpuBackend<double> be;
  std::mt19937 rng(11);
  const int B = 2, S = 5, H = 4, G = 2, hd = 6;
  Vec q = random_vec<double>(rng, size_t(B) * S * H * hd, -2, 2),
      k = random_vec<double>(rng, size_t(B) * S * G * hd, -2, 2),
      v = random_vec<double>(rng, size_t(B) * S * G * hd), w = random_vec<double>(rng, q.size());
  auto f = [&](const Vec& qq, const Vec& kk, const Vec& vv) {
    Vec o(qq.size()), p(size_t(B) * H * S * S);
    be.attention_forward(o.data(), p.data(), qq.data(), kk.data(), vv.data(), whole_heads(B, S, H, G, hd));
    return dot(o, w);
  };
  Vec out(q.size()), probs(size_t(B) * H * S * S);
  be.attention_forward(out.data(), probs.data(), q.data(), k.data(), v.data(), whole_heads(B, S, H, G, hd));
  Vec dq(q.size(), 0.0), dk(k.size(), 0.0), dv(v.size(), 0.0);
  be.attention_backward(dq.data(), dk.data(), dv.data(), w.data(), probs.data(), q.data(),
                        k.data(), v.data(), whole_heads(B, S, H, G, hd));
  expect_close(dq, fd_grad([&](const Vec& x) { return f(x, k, v); }, q), 1e-7, "dq");
  expect_close(dk, fd_grad([&](const Vec& x) { return f(q, x, v); }, k), 1e-7, "dk");
  expect_close(dv, fd_grad([&](const Vec& x) { return f(q, k, x); }, v), 1e-7, "dv");
}

// A tensor-parallel rank's heads: query heads [first_head, first_head + Hl)
// with their kv heads either split (G >= TP) or all present (G < TP) give the
// same outputs and gradients as those heads of the whole attention.
TEST(CpuKernelsDouble, AttentionOfAHeadSliceMatchesThoseHeadsOfTheWhole) {
  CpuBackend<double> be;
  std::mt19937 rng(3);
  const int B = 2, S = 5, H = 4, hd = 2, tp = 2;
  for (int G : {1, 2, 4}) {
    SCOPED_TRACE("G=" + std::to_string(G));
    Vec q = random_vec<double>(rng, size_t(B) * S * H * hd, -2, 2),
        k = random_vec<double>(rng, size_t(B) * S * G * hd, -2, 2),
        v = random_vec<double>(rng, size_t(B) * S * G * hd), dout = random_vec<double>(rng, q.size());
    Vec out(q.size()), probs(size_t(B) * H * S * S), dq(q.size(), 0.0), dk(k.size(), 0.0), dv(v.size(), 0.0);
    be.attention_forward(out.data(), probs.data(), q.data(), k.data(), v.data(), whole_heads(B, S, H, G, hd));
    be.attention_backward(dq.data(), dk.data(), dv.data(), dout.data(), probs.data(), q.data(), k.data(),
                          v.data(), whole_heads(B, S, H, G, hd));
    const int Hl = H / tp, Gl = G >= tp ? G / tp : G;
    // Columns [c0, c0 + w) of rows of width `width`, as a compact array.
    auto cols = [&](const Vec& x, int width, int c0, int w) {
      Vec y;
      for (size_t r = 0; r < x.size() / width; ++r)
        y.insert(y.end(), x.begin() + r * width + c0, x.begin() + r * width + c0 + w);
      return y;
    };
    Vec dk_sum(k.size(), 0.0), dv_sum(v.size(), 0.0);
    for (int r = 0; r < tp; ++r) {
      AttentionShape a = whole_heads(B, S, Hl, Gl, hd);
      a.first_head = r * Hl;
      a.first_kv_head = G >= tp ? r * Gl : 0;
      a.heads_per_kv = H / G;
      const int kv0 = a.first_kv_head * hd;
      Vec ql = cols(q, H * hd, r * Hl * hd, Hl * hd), kl = cols(k, G * hd, kv0, Gl * hd),
          vl = cols(v, G * hd, kv0, Gl * hd), dol = cols(dout, H * hd, r * Hl * hd, Hl * hd);
      Vec ol(ql.size()), pl(size_t(B) * Hl * S * S), dql(ql.size(), 0.0), dkl(kl.size(), 0.0), dvl(vl.size(), 0.0);
      be.attention_forward(ol.data(), pl.data(), ql.data(), kl.data(), vl.data(), a);
      be.attention_backward(dql.data(), dkl.data(), dvl.data(), dol.data(), pl.data(), ql.data(), kl.data(),
                            vl.data(), a);
      expect_close(ol, cols(out, H * hd, r * Hl * hd, Hl * hd), 1e-12, "slice out");
      expect_close(dql, cols(dq, H * hd, r * Hl * hd, Hl * hd), 1e-12, "slice dq");
      // kv gradients: each rank's part, summed over the ranks, is the whole.
      for (size_t row = 0; row < size_t(B) * S; ++row)
        for (int c = 0; c < Gl * hd; ++c) {
          dk_sum[row * G * hd + kv0 + c] += dkl[row * Gl * hd + c];
          dv_sum[row * G * hd + kv0 + c] += dvl[row * Gl * hd + c];
        }
    }
    expect_close(dk_sum, dk, 1e-12, "dk summed over the slices");
    expect_close(dv_sum, dv, 1e-12, "dv summed over the slices");
  }
}

TYPED_TEST(CpuKernels, GeluForwardAndBackward) {
  using T = TypeParam;
  const size_t n = 13;
  std::vector<T> x(n);
  for (size_t i = 0; i < n; ++i) x[i] = T(-4.0 + 8.0 * double(i) / double(n - 1) + 0.01);
  std::vector<T> out(n);
  this->be.gelu_forward(out.data(), x.data(), n);
  Vec expected(n);
  for (size_t i = 0; i < n; ++i) expected[i] = ref_gelu(double(x[i]));
  expect_close(out, expected, 4 * kernel_tol<T>(), "gelu");

  std::vector<T> dout = this->rnd(n), din = this->rnd(n);
  const Vec din0 = to_double(din);
  this->be.gelu_backward(din.data(), dout.data(), x.data(), n);
  Vec fd(n);
  for (size_t i = 0; i < n; ++i) {
    const double h = 1e-6, xi = double(x[i]);
    fd[i] = din0[i] + double(dout[i]) * (ref_gelu(xi + h) - ref_gelu(xi - h)) / (2 * h);
  }
  expect_close(din, fd, fd_tol<T>(), "gelu backward");
}

TYPED_TEST(CpuKernels, SoftmaxForwardAndBackward) {
  using T = TypeParam;
  const int n = 5, c = 7;
  std::vector<T> x = this->rnd(n * c, -3, 3);
  for (int j = 0; j < c; ++j) x[4 * c + j] += T(300);  // a shifted row: needs the max subtracted
  std::vector<T> p(n * c);
  this->be.softmax_forward(p.data(), x.data(), n, c);
  const Vec xd = to_double(x);
  expect_close(p, ref_softmax(xd, n, c), 4 * kernel_tol<T>(), "softmax");

  // Backward on an unshifted input, so that finite differences stay accurate.
  const std::vector<T> x2 = this->rnd(n * c, -3, 3);
  this->be.softmax_forward(p.data(), x2.data(), n, c);
  std::vector<T> dp = this->rnd(n * c), dx = this->rnd(n * c);
  const Vec dx0 = to_double(dx), w = to_double(dp);
  this->be.softmax_backward(dx.data(), dp.data(), p.data(), n, c);
  const Vec fd =
      fd_grad([&](const Vec& xx) { return dot(ref_softmax(xx, n, c), w); }, to_double(x2));
  expect_close(dx, add(dx0, fd), fd_tol<T>(), "softmax backward");
}

TYPED_TEST(CpuKernels, CrossEntropy) {
  using T = TypeParam;
  const int n = 5, v = 7;
  std::vector<T> logits = this->rnd(n * v, -3, 3);
  for (int j = 0; j < v; ++j) logits[2 * v + j] += T(500);  // needs the max subtracted
  const std::vector<int32_t> targets = {0, 6, 3, 3, 1};
  const T dscale = T(0.25);
  Vec ref_loss(n), ref_dl(n * v);
  for (int i = 0; i < n; ++i) {
    double mx = -1e300;
    for (int j = 0; j < v; ++j) mx = std::max(mx, double(logits[i * v + j]));
    double s = 0.0;
    for (int j = 0; j < v; ++j) s += std::exp(double(logits[i * v + j]) - mx);
    const double lse = mx + std::log(s);
    ref_loss[i] = lse - double(logits[i * v + targets[i]]);
    for (int j = 0; j < v; ++j)
      ref_dl[i * v + j] = (std::exp(double(logits[i * v + j]) - lse) - (j == targets[i])) *
                          double(dscale);
  }
  // The whole vocabulary in one slice: row_max, ce_partials, ce_finish.
  auto cross_entropy = [&](T* losses, T* dlogits) {
    std::vector<T> m(n), p(2 * n);
    this->be.row_max(m.data(), logits.data(), n, v);
    this->be.ce_partials(p.data(), logits.data(), m.data(), targets.data(), n, v, 0);
    this->be.ce_finish(losses, dlogits, logits.data(), m.data(), p.data(), targets.data(), n, v, 0, dscale);
  };
  std::vector<T> losses(n, T(-1)), dlogits = this->rnd(n * v);  // dlogits is overwritten
  cross_entropy(losses.data(), dlogits.data());
  expect_close(losses, ref_loss, 4 * kernel_tol<T>(), "losses");
  expect_close(dlogits, ref_dl, 4 * kernel_tol<T>(), "dlogits");

  std::vector<T> losses2(n, T(-1));
  cross_entropy(losses2.data(), nullptr);
  expect_close(losses2, ref_loss, 4 * kernel_tol<T>(), "losses without dlogits");

  // Two vocabulary slices [0, 3) and [3, 7), reduced by hand as the TP group
  // would (max, then sums): the same losses, and each slice's dlogits.
  const int cut = 3, widths[2] = {cut, v - cut};
  std::vector<std::vector<T>> parts(2), m(2, std::vector<T>(n)), p(2, std::vector<T>(2 * n));
  for (int r = 0; r < 2; ++r) {
    for (int i = 0; i < n; ++i)
      for (int j = 0; j < widths[r]; ++j) parts[r].push_back(logits[i * v + r * cut + j]);
    this->be.row_max(m[r].data(), parts[r].data(), n, widths[r]);
  }
  std::vector<T> mx(n), sums(2 * n);
  for (int i = 0; i < n; ++i) mx[i] = std::max(m[0][i], m[1][i]);
  for (int r = 0; r < 2; ++r) {
    this->be.ce_partials(p[r].data(), parts[r].data(), mx.data(), targets.data(), n, widths[r], r * cut);
    for (int i = 0; i < 2 * n; ++i) sums[i] += p[r][i];
  }
  for (int r = 0; r < 2; ++r) {
    std::vector<T> l(n), dl(n * widths[r]);
    this->be.ce_finish(l.data(), dl.data(), parts[r].data(), mx.data(), sums.data(), targets.data(), n,
                       widths[r], r * cut, dscale);
    expect_close(l, ref_loss, 4 * kernel_tol<T>(), "losses over two slices");
    Vec ref_part;
    for (int i = 0; i < n; ++i)
      for (int j = 0; j < widths[r]; ++j) ref_part.push_back(ref_dl[i * v + r * cut + j]);
    expect_close(dl, ref_part, 4 * kernel_tol<T>(), "dlogits of a slice");
  }
}

TYPED_TEST(CpuKernels, GatherScatterScaleRowDot) {
  using T = TypeParam;
  const int rows = 6, m = 4, d = 7;
  const std::vector<int32_t> idx = {5, 0, 3, 1};
  std::vector<T> src = this->rnd(rows * d), dst(m * d, T(-3));
  this->be.gather_rows(dst.data(), src.data(), idx.data(), m, d);
  for (int i = 0; i < m; ++i)
    for (int j = 0; j < d; ++j) EXPECT_EQ(dst[i * d + j], src[idx[i] * d + j]);

  // scatter_add_rows: dst[idx[i]] += weight[i] * src[i], weight null means 1.
  const std::vector<int32_t> sidx = {2, 5, 0, 3};
  std::vector<T> part = this->rnd(m * d), w = this->rnd(m, 0.1, 2.0);
  for (bool weighted : {false, true}) {
    std::vector<T> acc = this->rnd(rows * d);
    Vec expected = to_double(acc);
    for (int i = 0; i < m; ++i)
      for (int j = 0; j < d; ++j)
        expected[sidx[i] * d + j] += (weighted ? double(w[i]) : 1.0) * double(part[i * d + j]);
    this->be.scatter_add_rows(acc.data(), part.data(), sidx.data(), weighted ? w.data() : nullptr,
                              m, d);
    expect_close(acc, expected, 4 * kernel_tol<T>(),
                 weighted ? "scatter_add_rows weighted" : "scatter_add_rows");
  }

  std::vector<T> x = this->rnd(m * d);
  Vec expected(m * d);
  for (int i = 0; i < m; ++i)
    for (int j = 0; j < d; ++j) expected[i * d + j] = double(x[i * d + j]) * double(w[i]);
  this->be.scale_rows(x.data(), w.data(), m, d);
  expect_close(x, expected, kernel_tol<T>(), "scale_rows");

  std::vector<T> a = this->rnd(m * d), b = this->rnd(m * d), out(m, T(-5));
  Vec ref(m, 0.0);
  for (int i = 0; i < m; ++i)
    for (int j = 0; j < d; ++j) ref[i] += double(a[i * d + j]) * double(b[i * d + j]);
  this->be.row_dot(out.data(), a.data(), b.data(), m, d);
  expect_close(out, ref, 2 * kernel_tol<T>(), "row_dot");
}

TYPED_TEST(CpuKernels, AdamwMatchesPytorchFormulaOverThreeSteps) {
  using T = TypeParam;
  const size_t n = 9;
  const double lr = 1e-2, b1 = 0.9, b2 = 0.95;
  // eps tiny (the usual case) and eps large next to sqrt(v), so that where eps
  // sits relative to the bias correction matters.
  for (double eps : {1e-8, 0.05}) {
    for (double wd : {0.0, 0.1}) {
      SCOPED_TRACE("eps=" + std::to_string(eps) + " wd=" + std::to_string(wd));
      const double gscale = eps > 1e-3 ? 0.05 : 1.0;
      std::vector<T> p = this->rnd(n), m(n, T(0)), v(n, T(0));
      Vec pr = to_double(p), mr(n, 0.0), vr(n, 0.0);
      for (int t = 1; t <= 3; ++t) {
        std::vector<T> g = this->rnd(n, -gscale, gscale);
        const double bc1 = 1 - std::pow(b1, t), bc2 = 1 - std::pow(b2, t);
        for (size_t i = 0; i < n; ++i) {
          const double gi = double(g[i]);
          pr[i] -= lr * wd * pr[i];
          mr[i] = b1 * mr[i] + (1 - b1) * gi;
          vr[i] = b2 * vr[i] + (1 - b2) * gi * gi;
          const double denom = std::sqrt(vr[i]) / std::sqrt(bc2) + eps;
          pr[i] -= lr / bc1 * mr[i] / denom;
        }
        this->be.adamw(p.data(), g.data(), m.data(), v.data(), n, lr, b1, b2, eps, wd, bc1, bc2);
        expect_close(p, pr, 10 * kernel_tol<T>(), "param step " + std::to_string(t));
        expect_close(m, mr, 10 * kernel_tol<T>(), "exp_avg step " + std::to_string(t));
        expect_close(v, vr, 10 * kernel_tol<T>(), "exp_avg_sq step " + std::to_string(t));
      }
    }
  }
}

}  // namespace
}  // namespace mt
