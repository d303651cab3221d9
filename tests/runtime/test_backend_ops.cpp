// Every kernel of the backend interface (runtime/backend.h) against a plain
// double-precision loop written here, as ggml's test-backend-ops does: each
// test runs on every backend in Backends, in float32, float64 and bf16,
// moving its inputs to the device and its results back through the
// interface. A new backend is tested by adding its lines to Backends;
// EveryKernelHasATest fails when the interface gains a kernel that no test
// here calls.
//
// Bounds come from the precision. A kernel computing in Acc (float32 for
// bf16, T otherwise) from T-rounded inputs differs from the exact result of
// those inputs by about `ops` roundings in Acc (a sum of n terms: at most n,
// Higham's gamma_n) plus one rounding in T of every value it stores and
// reads back (`stored`), so each check states both counts and the bound is
// ops * eps(Acc) + stored * eps(T). Backward kernels are compared with
// central differences of the double reference (step 1e-6: an error near
// 1e-10 at the values used here, below the 1e-8 allowed for it) and start
// from non-zero gradient buffers, because gradient kernels accumulate.
#include "runtime/backend.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <fstream>
#include <functional>
#include <limits>
#include <random>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

namespace mt {
namespace {

template <typename T>
struct Cpu {
  using Scalar = T;
  static constexpr const char* kName = "cpu";
  static std::unique_ptr<Backend<T>> make() { return make_cpu_backend<T>(); }
};

// Every backend in every precision: a new backend is one line a precision.
using Backends = ::testing::Types<Cpu<float>, Cpu<double>, Cpu<bf16>>;

template <typename T>
const char* precision_name() {
  return std::is_same_v<T, float> ? "float32" : std::is_same_v<T, double> ? "float64" : "bf16";
}

struct BackendName {
  template <typename B>
  static std::string GetName(int) {
    return std::string(B::kName) + "_" + precision_name<typename B::Scalar>();
  }
};

using Vec = std::vector<double>;

// The bound of a result of `ops` roundings in Acc and `stored` in T.
template <typename T>
double ulps(double ops, double stored = 1) {
  return ops * epsilon_of<acc_t<T>>() + stored * epsilon_of<T>();
}
// The bound of a gradient against central differences of the double
// reference: the kernel's rounding (up to 256 operations per element for the
// sums here, and up to 4 stored values on its way) plus the differences' own
// error.
template <typename T>
double fd_tol() {
  return ulps<T>(256, 4) + 1e-8;
}

template <typename T>
Vec to_double(const std::vector<T>& v) {
  return Vec(v.begin(), v.end());
}

template <typename T>
void expect_close(const std::vector<T>& actual, const Vec& expected, double tol, const std::string& what) {
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

// Central differences of a scalar function of x, step h.
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

// docs/design.md section 3: rotate-half, theta_i = theta^(-2i/hd), position
// = row % seq, less doc_start[row] when given, divided by the interpolation
// factor.
Vec ref_rope(const Vec& x, int batch, int seq, int heads, int hd, double theta, double interpolation = 1.0,
             const std::vector<int32_t>* doc_start = nullptr) {
  Vec out = x;
  const int half = hd / 2;
  for (int r = 0; r < batch * seq; ++r) {
    const double p = (r % seq - (doc_start ? (*doc_start)[r] : 0)) / interpolation;
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

// Causal attention, with the S x S probabilities written out. doc_start
// (--reset-attention-mask): query i of sample b sees keys [doc_start[b S + i], i].
struct RefAttention {
  Vec out;    // [B*S, H*hd]
  Vec lse;    // [B, H, S]
  Vec probs;  // [B, H, S, S], 0 where a key is not visible
};
RefAttention ref_attention_of(const Vec& q, const Vec& k, const Vec& v, int B, int S, int H, int G, int hd,
                              const std::vector<int32_t>* doc_start = nullptr) {
  const int qs = H * hd, ks = G * hd;
  RefAttention r{Vec(size_t(B) * S * qs, 0.0), Vec(size_t(B) * H * S), Vec(size_t(B) * H * S * S, 0.0)};
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < H; ++h) {
      const int g = h / (H / G);
      for (int i = 0; i < S; ++i) {
        const int first = doc_start ? (*doc_start)[size_t(b) * S + i] : 0;
        Vec s(i + 1);
        double mx = -std::numeric_limits<double>::infinity();
        for (int j = first; j <= i; ++j) {
          double acc = 0.0;
          for (int c = 0; c < hd; ++c)
            acc += q[(size_t(b) * S + i) * qs + h * hd + c] * k[(size_t(b) * S + j) * ks + g * hd + c];
          s[j] = acc / std::sqrt(double(hd));
          mx = std::max(mx, s[j]);
        }
        double sum = 0.0;
        for (int j = first; j <= i; ++j) sum += (s[j] = std::exp(s[j] - mx));
        r.lse[(size_t(b) * H + h) * S + i] = mx + std::log(sum);
        for (int j = first; j <= i; ++j) {
          s[j] /= sum;
          r.probs[((size_t(b) * H + h) * S + i) * S + j] = s[j];
          for (int c = 0; c < hd; ++c)
            r.out[(size_t(b) * S + i) * qs + h * hd + c] += s[j] * v[(size_t(b) * S + j) * ks + g * hd + c];
        }
      }
    }
  return r;
}
Vec ref_attention(const Vec& q, const Vec& k, const Vec& v, int B, int S, int H, int G, int hd,
                  const std::vector<int32_t>* doc_start = nullptr) {
  return ref_attention_of(q, k, v, B, S, H, G, hd, doc_start).out;
}

// The gradients of attention from its probabilities, and for each element
// the size of what its rounding errors scale with: the sum over its terms
// of |P| times the sizes of the factors (dS = P (dP - D) is a difference,
// so its error scales with P (|dP| + |D|), not with dS).
struct RefAttentionGrads {
  Vec dq, dk, dv;
  Vec dq_size, dk_size, dv_size;
};
RefAttentionGrads ref_attention_backward(const RefAttention& f, const Vec& q, const Vec& k, const Vec& v,
                                         const Vec& dout, int B, int S, int H, int G, int hd) {
  const int qs = H * hd, ks = G * hd;
  const double scale = 1.0 / std::sqrt(double(hd));
  RefAttentionGrads r{Vec(q.size(), 0.0), Vec(k.size(), 0.0), Vec(v.size(), 0.0),
                      Vec(q.size(), 0.0), Vec(k.size(), 0.0), Vec(v.size(), 0.0)};
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < H; ++h) {
      const int g = h / (H / G);
      for (int i = 0; i < S; ++i) {
        const double* p = f.probs.data() + ((size_t(b) * H + h) * S + i) * S;
        const size_t qi = (size_t(b) * S + i) * qs + h * hd;
        Vec dp(S, 0.0);
        double D = 0.0;
        for (int j = 0; j <= i; ++j) {
          for (int c = 0; c < hd; ++c) dp[j] += dout[qi + c] * v[(size_t(b) * S + j) * ks + g * hd + c];
          D += p[j] * dp[j];
        }
        for (int j = 0; j <= i; ++j) {
          const size_t kj = (size_t(b) * S + j) * ks + g * hd;
          const double ds = scale * p[j] * (dp[j] - D), size = scale * p[j] * (std::abs(dp[j]) + std::abs(D));
          for (int c = 0; c < hd; ++c) {
            r.dq[qi + c] += ds * k[kj + c];
            r.dk[kj + c] += ds * q[qi + c];
            r.dv[kj + c] += p[j] * dout[qi + c];
            r.dq_size[qi + c] += size * std::abs(k[kj + c]);
            r.dk_size[kj + c] += size * std::abs(q[qi + c]);
            r.dv_size[kj + c] += p[j] * std::abs(dout[qi + c]);
          }
        }
      }
    }
  return r;
}

// Documents of every length from 1 up, some across the kernel's tiles:
// doc_start [B*S] for --reset-attention-mask.
std::vector<int32_t> document_starts(int B, int S) {
  std::vector<int32_t> starts(size_t(B) * S);
  for (int b = 0; b < B; ++b) {
    int first = 0, length = 1 + b;
    for (int i = 0; i < S; ++i) {
      if (i - first == length) {
        first = i;
        length = length * 3 + 1;  // 1, 4, 13, 40, 121, ...
      }
      starts[size_t(b) * S + i] = first;
    }
  }
  return starts;
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

template <typename B>
class BackendOps : public ::testing::Test {
 protected:
  using T = typename B::Scalar;
  using Acc = acc_t<T>;
  std::unique_ptr<Backend<T>> be = B::make();
  std::mt19937 rng{20240611};

  template <typename E = T>
  std::vector<E> rnd(size_t n, double lo = -1.0, double hi = 1.0) {
    std::uniform_real_distribution<double> u(lo, hi);
    std::vector<E> v(n);
    for (auto& x : v) x = E(u(rng));
    return v;
  }
  // A device copy of host values (T on be, Acc on be->acc(), or token ids),
  // kept until the test ends.
  template <typename E>
  E* dev(const std::vector<E>& host) {
    if constexpr (std::is_same_v<E, int32_t>) {
      DeviceBuffer<T, int32_t>& b = int_buffers_.emplace_back(*be, host.size());
      be->int_from_host(b.data(), host.data(), host.size());
      return b.data();
    } else {
      Backend<E>& on = backend_of<E>();
      DeviceBuffer<E>& b = buffers<E>().emplace_back(on, host.size());
      on.from_host(b.data(), host.data(), host.size());
      return b.data();
    }
  }
  // Attention's inputs, q [B*S, H*hd] and k, v [B*S, G*hd]: q and k in
  // [-2, 2], so that scores reach a few units and the softmax is uneven.
  struct Qkv {
    std::vector<T> q, k, v;
  };
  Qkv attention_inputs(int batch, int seq, int heads, int kv_heads, int hd) {
    const size_t rows = size_t(batch) * seq;
    return {rnd(rows * heads * hd, -2, 2), rnd(rows * kv_heads * hd, -2, 2), rnd(rows * kv_heads * hd)};
  }
  // The backward tests' start: random inputs of whole heads (with the
  // documents of document_starts when asked), the forward pass run.
  struct AttentionRun {
    Qkv inputs;
    std::vector<int32_t> starts;
    AttentionShape shape;
    T *q, *k, *v, *out;
    Acc* lse;
  };
  AttentionRun attention_run(int batch, int seq, int heads, int kv_heads, int hd, bool documents) {
    Qkv in = attention_inputs(batch, seq, heads, kv_heads, hd);
    T *q = dev(in.q), *k = dev(in.k), *v = dev(in.v), *out = dev(std::vector<T>(in.q.size()));
    Acc* lse = dev(std::vector<Acc>(size_t(batch) * heads * seq));
    AttentionRun a{std::move(in), document_starts(batch, seq), whole_heads(batch, seq, heads, kv_heads, hd),
                   q, k, v, out, lse};
    if (documents) a.shape.doc_start = dev(a.starts);
    be->attention_forward(a.out, a.lse, a.q, a.k, a.v, a.shape);
    return a;
  }
  template <typename E>
  std::vector<E> host(const E* device, size_t n) {
    std::vector<E> h(n);
    backend_of<E>().to_host(h.data(), device, n);
    return h;
  }

 private:
  template <typename E>
  Backend<E>& backend_of() {
    if constexpr (std::is_same_v<E, T>) {
      return *be;
    } else {
      return be->acc();
    }
  }
  template <typename E>
  std::vector<DeviceBuffer<E>>& buffers() {
    if constexpr (std::is_same_v<E, T>) {
      return buffers_;
    } else {
      return acc_buffers_;
    }
  }
  std::vector<DeviceBuffer<T>> buffers_;
  std::vector<DeviceBuffer<Acc>> acc_buffers_;
  std::vector<DeviceBuffer<T, int32_t>> int_buffers_;
};

TYPED_TEST_SUITE(BackendOps, Backends, BackendName);

// The kernels of the interface: its pure virtual functions but the name and
// library strings.
std::set<std::string> interface_kernels() {
  std::ifstream in(std::string(MT_SOURCE_DIR) + "/runtime/backend.h");
  std::stringstream text;
  text << in.rdbuf();
  const std::string s = text.str();
  const std::regex pure_virtual(R"(virtual\s[^;{}]*?\b(\w+)\s*\([^;]*?\)\s*(const\s*)?=\s*0\s*;)");
  std::set<std::string> names;
  for (auto it = std::sregex_iterator(s.begin(), s.end(), pure_virtual); it != std::sregex_iterator(); ++it)
    names.insert((*it)[1]);
  names.erase("name");
  names.erase("library");
  return names;
}

TEST(BackendInterface, EveryKernelHasATest) {
  const std::set<std::string> kernels = interface_kernels();
  ASSERT_GE(kernels.size(), 30u) << "runtime/backend.h was not parsed";
  std::ifstream in(__FILE__);
  std::stringstream text;
  text << in.rdbuf();
  const std::string tests = text.str();
  for (const std::string& k : kernels) {
    const bool called = tests.find("->" + k + "(") != std::string::npos || tests.find("." + k + "(") != std::string::npos;
    EXPECT_TRUE(called) << "no test calls Backend::" << k;
  }
}

TYPED_TEST(BackendOps, MemoryHelpers) {
  using T = typename TestFixture::T;
  using Acc = typename TestFixture::Acc;
  auto& be = *this->be;
  DeviceBuffer<T> a(be, 13);
  DeviceBuffer<T, int32_t> ai(be, 5);
  for (T x : this->host(a.data(), 13)) EXPECT_EQ(x, T(0)) << "alloc zero-fills";
  const std::vector<T> h = this->rnd(13);
  be.from_host(a.data(), h.data(), 13);
  EXPECT_EQ(this->host(a.data(), 13), h);
  T* b = be.alloc(13);
  be.copy(b, a.data(), 13);
  EXPECT_EQ(this->host(b, 13), h);
  be.fill(b, T(2.5), 13);
  for (T x : this->host(b, 13)) EXPECT_EQ(x, T(2.5));
  be.free(b);
  // Integers come back through a gather of them as row indices.
  int32_t* zeros = be.alloc_int(4);
  DeviceBuffer<T> rows(be, 4);
  be.gather_rows(rows.data(), a.data(), zeros, 4, 1);
  for (T x : this->host(rows.data(), 4)) EXPECT_EQ(x, h[0]) << "alloc_int zero-fills";
  be.free(zeros);
  const std::vector<int32_t> ih = {3, 12, 7, 0, 9};
  be.int_from_host(ai.data(), ih.data(), 5);
  DeviceBuffer<T> picked(be, 5);
  be.gather_rows(picked.data(), a.data(), ai.data(), 5, 1);
  const std::vector<T> back = this->host(picked.data(), 5);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(back[i], h[ih[i]]);
  // round_from_acc rounds each value to T once.
  const std::vector<Acc> wide = this->template rnd<Acc>(9);
  T* narrow = this->dev(std::vector<T>(9));
  be.round_from_acc(narrow, this->dev(wide), 9);
  const std::vector<T> rounded = this->host(narrow, 9);
  for (int i = 0; i < 9; ++i) EXPECT_EQ(rounded[i], T(wide[i])) << "round_from_acc [" << i << "]";
}

TYPED_TEST(BackendOps, GemmAllTransposesWithStridesAndBeta) {
  using T = typename TestFixture::T;
  using Acc = typename TestFixture::Acc;
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
      auto opA = [&](int i, int l) { return double(ta == Trans::N ? A[i * lda + l] : A[l * lda + i]); };
      auto opB = [&](int l, int j) { return double(tb == Trans::N ? B[l * ldb + j] : B[j * ldb + l]); };
      Vec expected = to_double(C);  // padding columns must stay as they were
      for (int i = 0; i < m; ++i)
        for (int j = 0; j < n; ++j) {
          double acc = 0.0;
          for (int l = 0; l < k; ++l) acc += opA(i, l) * opB(l, j);
          expected[i * ldc + j] = double(alpha) * acc + double(beta) * double(C[i * ldc + j]);
        }
      const std::string what = std::string(" ta=") + (ta == Trans::N ? "N" : "T") + " tb=" + (tb == Trans::N ? "N" : "T");
      T* c = this->dev(C);
      this->be->gemm(ta, tb, m, n, k, alpha, this->dev(A), lda, this->dev(B), ldb, beta, c, ldc);
      expect_close(this->host(c, C.size()), expected, ulps<T>(2 * k + 4, 1), "gemm" + what);
      // The same product kept in Acc: nothing rounded to T.
      const std::vector<Acc> C_acc(C.begin(), C.end());
      Acc* c_acc = this->dev(C_acc);
      this->be->gemm_acc(ta, tb, m, n, k, Acc(alpha), this->dev(A), lda, this->dev(B), ldb, Acc(beta), c_acc, ldc);
      expect_close(this->host(c_acc, C.size()), expected, ulps<T>(2 * k + 4, 0), "gemm_acc" + what);
    }
}

TYPED_TEST(BackendOps, GroupedGemmIsOneGemmAMember) {
  using T = typename TestFixture::T;
  using Acc = typename TestFixture::Acc;
  // Members of 300 rows (cut into blocks by the CPU backend), 1 row and 40
  // rows, each with its own inner size, operands and output.
  const int n = 7;
  const std::vector<std::pair<int, int>> mk = {{300, 5}, {1, 3}, {40, 6}};
  const T alpha = T(0.5), beta = T(-0.25);
  for (Trans ta : {Trans::N, Trans::T})
    for (Trans tb : {Trans::N, Trans::T}) {
      const int lda = 302, ldb = 9, ldc = n + 1;  // room for any member's op(A) and op(B)
      std::vector<std::vector<T>> A, B, C;
      Vec expected;
      std::vector<GroupMember<T, T>> members;
      std::vector<GroupMember<T, Acc>> acc_members;
      std::vector<T*> c_dev;
      std::vector<Acc*> c_acc_dev;
      for (const auto& [m, k] : mk) {
        const int a_rows = ta == Trans::N ? m : k, b_rows = tb == Trans::N ? k : n;
        A.push_back(this->rnd(size_t(a_rows) * lda));
        B.push_back(this->rnd(size_t(b_rows) * ldb));
        C.push_back(this->rnd(size_t(m) * ldc));
        const std::vector<T>&a = A.back(), &b = B.back(), &c = C.back();
        for (int i = 0; i < m; ++i)
          for (int j = 0; j < ldc; ++j) {
            double acc = 0.0;
            for (int l = 0; l < k; ++l)
              acc += double(ta == Trans::N ? a[i * lda + l] : a[l * lda + i]) *
                     double(tb == Trans::N ? b[l * ldb + j] : b[j * ldb + l]);
            // the padding column stays as it was
            expected.push_back(j < n ? double(alpha) * acc + double(beta) * double(c[i * ldc + j]) : double(c[i * ldc + j]));
          }
        c_dev.push_back(this->dev(c));
        c_acc_dev.push_back(this->dev(std::vector<Acc>(c.begin(), c.end())));
        const T *ad = this->dev(a), *bd = this->dev(b);
        members.push_back({m, k, ad, bd, c_dev.back()});
        acc_members.push_back({m, k, ad, bd, c_acc_dev.back()});
      }
      const std::string what = std::string(" ta=") + (ta == Trans::N ? "N" : "T") + " tb=" + (tb == Trans::N ? "N" : "T");
      this->be->gemm_grouped(ta, tb, n, alpha, lda, ldb, beta, ldc, members);
      this->be->gemm_acc_grouped(ta, tb, n, Acc(alpha), lda, ldb, Acc(beta), ldc, acc_members);
      Vec got, got_acc;
      for (size_t g = 0; g < mk.size(); ++g) {
        const size_t size = size_t(mk[g].first) * ldc;
        for (T x : this->host(c_dev[g], size)) got.push_back(double(x));
        for (Acc x : this->host(c_acc_dev[g], size)) got_acc.push_back(double(x));
      }
      expect_close(got, expected, ulps<T>(2 * 6 + 4, 1), "gemm_grouped" + what);
      expect_close(got_acc, expected, ulps<T>(2 * 6 + 4, 0), "gemm_acc_grouped" + what);
    }
}

TYPED_TEST(BackendOps, GemmBetaZeroOverwrites) {
  using T = typename TestFixture::T;
  const int m = 3, n = 5, k = 7;
  std::vector<T> A = this->rnd(m * k), B = this->rnd(k * n);
  std::vector<T> C(m * n, T(std::numeric_limits<float>::quiet_NaN()));  // beta = 0 must not read C
  Vec expected(m * n, 0.0);
  for (int i = 0; i < m; ++i)
    for (int j = 0; j < n; ++j)
      for (int l = 0; l < k; ++l) expected[i * n + j] += double(A[i * k + l]) * B[l * n + j];
  T* c = this->dev(C);
  this->be->gemm(Trans::N, Trans::N, m, n, k, T(1), this->dev(A), k, this->dev(B), n, T(0), c, n);
  expect_close(this->host(c, C.size()), expected, ulps<T>(2 * k, 1), "gemm beta=0");
}

TYPED_TEST(BackendOps, AxpyScaleSumSquares) {
  using T = typename TestFixture::T;
  const size_t n = 11;
  std::vector<T> x = this->rnd(n), y = this->rnd(n);
  Vec expected(n);
  for (size_t i = 0; i < n; ++i) expected[i] = double(y[i]) + double(T(-1.3)) * double(x[i]);
  T* yd = this->dev(y);
  this->be->axpy(n, T(-1.3), this->dev(x), yd);
  expect_close(this->host(yd, n), expected, ulps<T>(2), "axpy");

  for (size_t i = 0; i < n; ++i) expected[i] = double(x[i]) * double(T(0.37));
  T* xd = this->dev(x);
  this->be->scale(n, T(0.37), xd);
  expect_close(this->host(xd, n), expected, ulps<T>(1), "scale");

  double ss = 0.0;
  for (T v : x) ss += double(v) * double(v);
  // Summed in double for any T: n + 1 double roundings.
  EXPECT_NEAR(this->be->sum_squares(n, this->dev(x)), ss, ulps<double>(n + 1) * ss);
}

TYPED_TEST(BackendOps, EmbeddingForwardAndAccumulatingBackward) {
  using T = typename TestFixture::T;
  using Acc = typename TestFixture::Acc;
  const int V = 6, d = 7;
  const std::vector<int32_t> tokens = {3, 1, 3, 0, 5, 3, 1, 2, 3};  // repeats accumulate
  const int n = int(tokens.size());
  const int32_t* tok = this->dev(tokens);
  std::vector<T> table = this->rnd(V * d);
  T* out = this->dev(std::vector<T>(n * d, T(-9)));
  this->be->embedding_forward(out, this->dev(table), tok, n, d, 0, V);
  const std::vector<T> got = this->host(out, n * d);
  for (int t = 0; t < n; ++t)
    for (int j = 0; j < d; ++j) EXPECT_EQ(got[t * d + j], table[tokens[t] * d + j]);

  std::vector<T> dout = this->rnd(n * d);
  std::vector<Acc> dtable = this->template rnd<Acc>(V * d);
  Vec expected = to_double(dtable);
  for (int t = 0; t < n; ++t)
    for (int j = 0; j < d; ++j) expected[tokens[t] * d + j] += double(dout[t * d + j]);
  Acc* dt = this->dev(dtable);
  this->be->embedding_backward(dt, this->dev(dout), tok, n, d, 0, V);
  expect_close(this->host(dt, dtable.size()), expected, ulps<T>(n, 0), "embedding_backward");
}

TYPED_TEST(BackendOps, EmbeddingOfAVocabularySlice) {
  using T = typename TestFixture::T;
  using Acc = typename TestFixture::Acc;
  const int d = 3, start = 2, rows = 3;  // the slice holds tokens 2, 3, 4
  const std::vector<int32_t> tokens = {3, 1, 4, 0, 5, 2, 3};
  const int n = int(tokens.size());
  const int32_t* tok = this->dev(tokens);
  std::vector<T> slice = this->rnd(rows * d);
  T* out = this->dev(std::vector<T>(n * d, T(-9)));
  this->be->embedding_forward(out, this->dev(slice), tok, n, d, start, rows);
  const std::vector<T> got = this->host(out, n * d);
  for (int t = 0; t < n; ++t) {
    const bool inside = tokens[t] >= start && tokens[t] < start + rows;
    for (int j = 0; j < d; ++j) EXPECT_EQ(got[t * d + j], inside ? slice[(tokens[t] - start) * d + j] : T(0)) << t;
  }
  std::vector<T> dout = this->rnd(n * d);
  Vec expected(rows * d, 0.0);
  for (int t = 0; t < n; ++t)
    if (tokens[t] >= start && tokens[t] < start + rows)
      for (int j = 0; j < d; ++j) expected[(tokens[t] - start) * d + j] += double(dout[t * d + j]);
  Acc* dslice = this->dev(std::vector<Acc>(rows * d, Acc(0)));
  this->be->embedding_backward(dslice, this->dev(dout), tok, n, d, start, rows);
  expect_close(this->host(dslice, rows * d), expected, ulps<T>(n, 0), "embedding_backward of a slice");
}

TYPED_TEST(BackendOps, RmsnormForward) {
  using T = typename TestFixture::T;
  using Acc = typename TestFixture::Acc;
  const int n = 5, d = 7;
  const double eps = 0.05;  // large, so that where eps goes matters
  std::vector<T> x = this->rnd(n * d), g = this->rnd(d, 0.5, 1.5);
  T* out = this->dev(std::vector<T>(n * d));
  Acc* rstd = this->dev(std::vector<Acc>(n));
  this->be->rmsnorm_forward(out, rstd, this->dev(x), this->dev(g), n, d, eps);
  Vec ref_rstd;
  const Vec expected = ref_rmsnorm(to_double(x), to_double(g), n, d, double(Acc(eps)), &ref_rstd);
  // A sum of d squares, a square root and two products; rstd stays in Acc.
  expect_close(this->host(out, n * d), expected, ulps<T>(d + 8, 1), "rmsnorm out");
  expect_close(this->host(rstd, n), ref_rstd, ulps<T>(d + 4, 0), "rmsnorm rstd");
}

TYPED_TEST(BackendOps, RmsnormBackwardMatchesFiniteDifferencesAndAccumulates) {
  using T = typename TestFixture::T;
  using Acc = typename TestFixture::Acc;
  const int n = 5, d = 7;
  const double eps = 0.05;
  std::vector<T> x = this->rnd(n * d), g = this->rnd(d, 0.5, 1.5), dout = this->rnd(n * d);
  T *xd = this->dev(x), *gd = this->dev(g), *out = this->dev(std::vector<T>(n * d));
  Acc* rstd = this->dev(std::vector<Acc>(n));
  this->be->rmsnorm_forward(out, rstd, xd, gd, n, d, eps);
  std::vector<T> dx = this->rnd(n * d);
  std::vector<Acc> dg = this->template rnd<Acc>(d);
  T* dxd = this->dev(dx);
  Acc* dgd = this->dev(dg);
  this->be->rmsnorm_backward(dxd, dgd, this->dev(dout), xd, gd, rstd, n, d);
  const Vec x64 = to_double(x), g64 = to_double(g), w = to_double(dout);
  const double e = double(Acc(eps));
  const Vec fdx = fd_grad([&](const Vec& xx) { return dot(ref_rmsnorm(xx, g64, n, d, e), w); }, x64);
  const Vec fdg = fd_grad([&](const Vec& gg) { return dot(ref_rmsnorm(x64, gg, n, d, e), w); }, g64);
  expect_close(this->host(dxd, dx.size()), add(to_double(dx), fdx), fd_tol<T>(), "rmsnorm dx");
  expect_close(this->host(dgd, dg.size()), add(to_double(dg), fdg), fd_tol<T>(), "rmsnorm dg");
}

// Base, interpolation and reset positions (documents restarting at 0 at
// rows 3 and 7 of the two samples).
TYPED_TEST(BackendOps, RopeForwardMatchesFormula) {
  using T = typename TestFixture::T;
  const int batch = 2, seq = 5, heads = 3, hd = 8;
  const std::vector<int32_t> starts = {0, 0, 0, 3, 3, 0, 0, 2, 2, 2};  // positions 0 1 2 0 1, 0 1 0 1 2
  for (double theta : {10000.0, 7.0})
    for (double interpolation : {1.0, 4.0})
      for (bool reset : {false, true}) {
        SCOPED_TRACE(::testing::Message() << "theta " << theta << " interpolation " << interpolation
                                          << (reset ? " reset positions" : ""));
        std::vector<T> x = this->rnd(size_t(batch) * seq * heads * hd);
        const Vec expected =
            ref_rope(to_double(x), batch, seq, heads, hd, theta, interpolation, reset ? &starts : nullptr);
        T* xd = this->dev(x);
        const RopeShape shape{batch, seq, heads, hd, theta, interpolation, reset ? this->dev(starts) : nullptr};
        this->be->rope_forward(xd, shape);
        const std::vector<T> y = this->host(xd, x.size());
        // The angle position / f * theta^(-2i/hd) (a power, a quotient, a
        // product) and its cosine and sine, then two products and a sum.
        expect_close(y, expected, ulps<T>(16, 1), "rope");
        // Position 0 is left as it is: rows 0 and seq (and 3, 7 with resets).
        for (int r = 0; r < batch * seq; ++r) {
          if (r % seq - (reset ? starts[r] : 0) != 0) continue;
          for (int c = 0; c < heads * hd; ++c)
            EXPECT_EQ(y[size_t(r) * heads * hd + c], x[size_t(r) * heads * hd + c]) << "row " << r;
        }
      }
}

// Generation's rows, each at its own position (RopeShape::position): row i
// turns as row pos[i] of a sample would.
TYPED_TEST(BackendOps, RopeAtExplicitPositionsMatchesFormula) {
  using T = typename TestFixture::T;
  const int heads = 2, hd = 8, positions = 64;
  const std::vector<int32_t> pos = {5, 0, 63, 17, 17, 2};
  const int n = int(pos.size()), width = heads * hd;
  const std::vector<T> x = this->rnd(size_t(n) * width);
  Vec expected;
  for (int i = 0; i < n; ++i) {
    Vec sample(size_t(pos[i] + 1) * width, 0.0);  // the row at position pos[i] of a sample
    std::copy(x.begin() + i * width, x.begin() + (i + 1) * width, sample.begin() + ptrdiff_t(pos[i]) * width);
    const Vec turned = ref_rope(sample, 1, pos[i] + 1, heads, hd, 500.0, 2.0);
    expected.insert(expected.end(), turned.end() - width, turned.end());
  }
  T* xd = this->dev(x);
  this->be->rope_forward(xd, RopeShape{n, 1, heads, hd, 500.0, 2.0, nullptr, this->dev(pos), positions});
  expect_close(this->host(xd, x.size()), expected, ulps<T>(16, 1), "rope at positions");
}

TYPED_TEST(BackendOps, RopeBackwardIsTheTranspose) {
  using T = typename TestFixture::T;
  const int batch = 2, seq = 5, heads = 3, hd = 6;
  const RopeShape shape{batch, seq, heads, hd, 10000.0, 2.0};
  const size_t N = size_t(batch) * seq * heads * hd;
  std::vector<T> x = this->rnd(N), y = this->rnd(N);
  T *rx = this->dev(x), *rty = this->dev(y);
  this->be->rope_forward(rx, shape);
  this->be->rope_backward(rty, shape);
  // dot(R x, y) == dot(x, R^T y), sums of N terms of 16-ulp values.
  const Vec Rx = to_double(this->host(rx, N)), RTy = to_double(this->host(rty, N));
  const double lhs = dot(Rx, to_double(y)), rhs = dot(to_double(x), RTy);
  EXPECT_NEAR(lhs, rhs, ulps<T>(16, 1) * std::sqrt(double(N)) * (1 + std::abs(lhs)));
  // R is orthogonal, so backward(forward(x)) == x.
  this->be->rope_backward(rx, shape);
  expect_close(this->host(rx, N), to_double(x), ulps<T>(32, 2), "R^T R x");
}

// The attention tests' shapes: S = 5 fits in one tile; S = 200 spans
// several query blocks and key tiles, with a partial last one; 300 query
// heads to one key/value head are more rows than a query block stacks.
struct AttentionCase {
  int S, H, G;
};

TYPED_TEST(BackendOps, AttentionForwardMatchesNaive) {
  using T = typename TestFixture::T;
  using Acc = typename TestFixture::Acc;
  const int B = 2, hd = 6;
  for (const auto [S, H, G] : {AttentionCase{5, 4, 1}, AttentionCase{5, 4, 2}, AttentionCase{5, 4, 4},
                               AttentionCase{200, 4, 1}, AttentionCase{200, 4, 2}, AttentionCase{200, 4, 4},
                               AttentionCase{20, 300, 1}})
    for (bool documents : {false, true}) {
      SCOPED_TRACE(::testing::Message() << "S=" << S << " H=" << H << " G=" << G << (documents ? " documents" : ""));
      const auto [q, k, v] = this->attention_inputs(B, S, H, G, hd);
      const std::vector<int32_t> starts = document_starts(B, S);
      AttentionShape shape = whole_heads(B, S, H, G, hd);
      if (documents) shape.doc_start = this->dev(starts);
      T* out = this->dev(std::vector<T>(q.size(), T(-7)));  // garbage in
      Acc* lse = this->dev(std::vector<Acc>(size_t(B) * H * S, Acc(-7)));
      const RefAttention expected =
          ref_attention_of(to_double(q), to_double(k), to_double(v), B, S, H, G, hd, documents ? &starts : nullptr);
      this->be->attention_forward(out, lse, this->dev(q), this->dev(k), this->dev(v), shape);
      // Scores are sums of hd products, exponentiated (an error in a score
      // of size up to 4 * hd / sqrt(hd) is amplified by that size),
      // summed over S and summed over S again with v; the output is
      // rounded, and so are the probabilities multiplying v.
      const double ops = 4.0 * std::sqrt(double(hd)) * hd + 2.0 * S + 8.0;
      expect_close(this->host(out, q.size()), expected.out, ulps<T>(ops, 2), "attention out");
      expect_close(this->host(lse, expected.lse.size()), expected.lse, ulps<T>(ops, 0), "attention log-sum-exp");
    }
}

TYPED_TEST(BackendOps, AttentionBackwardMatchesFiniteDifferencesAndAccumulates) {
  using T = typename TestFixture::T;
  const int B = 2, S = 5, H = 4, hd = 6;
  for (bool documents : {false, true})
    for (int G : {1, 2, 4}) {
      SCOPED_TRACE(::testing::Message() << "G=" << G << (documents ? " documents" : ""));
      const auto a = this->attention_run(B, S, H, G, hd, documents);
      const auto& [q, k, v] = a.inputs;
      const std::vector<int32_t>& starts = a.starts;
      const std::vector<T> dout = this->rnd(q.size());
      std::vector<T> dq = this->rnd(q.size()), dk = this->rnd(k.size()), dv = this->rnd(v.size());
      T *dqd = this->dev(dq), *dkd = this->dev(dk), *dvd = this->dev(dv);
      this->be->attention_backward(dqd, dkd, dvd, this->dev(dout), a.out, a.lse, a.q, a.k, a.v, a.shape);
      const Vec q64 = to_double(q), k64 = to_double(k), v64 = to_double(v), w = to_double(dout);
      auto f = [&](const Vec& qq, const Vec& kk, const Vec& vv) {
        return dot(ref_attention(qq, kk, vv, B, S, H, G, hd, documents ? &starts : nullptr), w);
      };
      expect_close(this->host(dqd, q.size()), add(to_double(dq), fd_grad([&](const Vec& x) { return f(x, k64, v64); }, q64)),
                   fd_tol<T>(), "dq");
      expect_close(this->host(dkd, k.size()), add(to_double(dk), fd_grad([&](const Vec& x) { return f(q64, x, v64); }, k64)),
                   fd_tol<T>(), "dk");
      expect_close(this->host(dvd, v.size()), add(to_double(dv), fd_grad([&](const Vec& x) { return f(q64, k64, x); }, v64)),
                   fd_tol<T>(), "dv");
    }
}

// Across several query blocks and key tiles, against the gradients of the
// reference's own probabilities: each element within the rounding of its
// terms (RefAttentionGrads).
TYPED_TEST(BackendOps, AttentionBackwardOfManyTilesMatchesTheReference) {
  using T = typename TestFixture::T;
  const int B = 2, hd = 6;
  for (const auto [S, H, G] : {AttentionCase{200, 4, 1}, AttentionCase{200, 4, 4}, AttentionCase{20, 300, 1}})
    for (bool documents : {false, true}) {
      SCOPED_TRACE(::testing::Message() << "S=" << S << " H=" << H << " G=" << G << (documents ? " documents" : ""));
      const auto a = this->attention_run(B, S, H, G, hd, documents);
      const auto& [q, k, v] = a.inputs;
      const std::vector<int32_t>& starts = a.starts;
      const std::vector<T> dout = this->rnd(q.size());
      T *dqd = this->dev(std::vector<T>(q.size())), *dkd = this->dev(std::vector<T>(k.size())),
        *dvd = this->dev(std::vector<T>(v.size()));
      this->be->attention_backward(dqd, dkd, dvd, this->dev(dout), a.out, a.lse, a.q, a.k, a.v, a.shape);
      const Vec q64 = to_double(q), k64 = to_double(k), v64 = to_double(v);
      const RefAttention f = ref_attention_of(q64, k64, v64, B, S, H, G, hd, documents ? &starts : nullptr);
      const RefAttentionGrads r = ref_attention_backward(f, q64, k64, v64, to_double(dout), B, S, H, G, hd);
      // A probability (the forward's score error, amplified) and the stored
      // output under D, dP and D (hd terms each), dS and its sum over S keys
      // or H queries per key; P and dS are stored in T, and so is the result.
      const double tol = ulps<T>(4.0 * std::sqrt(double(hd)) * hd + 2.0 * hd + H * S + 8.0, 4);
      auto check = [&](const T* dev_grad, const Vec& expected, const Vec& size, const char* what) {
        const std::vector<T> got = this->host(dev_grad, expected.size());
        for (size_t i = 0; i < expected.size(); ++i)
          EXPECT_NEAR(double(got[i]), expected[i], tol * std::max({1.0, std::abs(expected[i]), size[i]}))
              << what << " [" << i << "]";
      };
      check(dqd, r.dq, r.dq_size, "dq");
      check(dkd, r.dk, r.dk_size, "dk");
      check(dvd, r.dv, r.dv_size, "dv");
    }
}

// A tensor-parallel rank's heads: query heads [first_head, first_head + Hl)
// with their kv heads either split (G >= TP) or all present (G < TP) give the
// outputs and gradients of those heads of the whole attention (the kv
// gradients summed over the ranks), within the rounding of the whole.
TYPED_TEST(BackendOps, AttentionOfAHeadSliceMatchesThoseHeadsOfTheWhole) {
  using T = typename TestFixture::T;
  using Acc = typename TestFixture::Acc;
  const int B = 2, S = 5, H = 4, hd = 2, tp = 2;
  // Two roundings of the same values, each as far from the exact one as the forward test allows.
  const double tol = 2 * ulps<T>(4.0 * std::sqrt(double(hd)) * hd + 4.0 * S + 8.0, 4);
  for (int G : {1, 2, 4}) {
    SCOPED_TRACE("G=" + std::to_string(G));
    const auto [q, k, v] = this->attention_inputs(B, S, H, G, hd);
    const std::vector<T> dout = this->rnd(q.size());
    T* out = this->dev(std::vector<T>(q.size()));
    Acc* lse = this->dev(std::vector<Acc>(size_t(B) * H * S));
    T *dq = this->dev(std::vector<T>(q.size())), *dk = this->dev(std::vector<T>(k.size())),
      *dv = this->dev(std::vector<T>(v.size()));
    T *qd = this->dev(q), *kd = this->dev(k), *vd = this->dev(v);
    this->be->attention_forward(out, lse, qd, kd, vd, whole_heads(B, S, H, G, hd));
    this->be->attention_backward(dq, dk, dv, this->dev(dout), out, lse, qd, kd, vd, whole_heads(B, S, H, G, hd));
    const Vec whole_out = to_double(this->host(out, q.size())), whole_dq = to_double(this->host(dq, q.size()));
    const Vec whole_dk = to_double(this->host(dk, k.size())), whole_dv = to_double(this->host(dv, v.size()));
    const int Hl = H / tp, Gl = G >= tp ? G / tp : G;
    // Columns [c0, c0 + w) of rows of width `width`, as a compact array.
    auto cols = [](const auto& x, int width, int c0, int w) {
      std::vector<typename std::decay_t<decltype(x)>::value_type> y;
      for (size_t r = 0; r < x.size() / width; ++r) y.insert(y.end(), x.begin() + r * width + c0, x.begin() + r * width + c0 + w);
      return y;
    };
    Vec dk_sum(k.size(), 0.0), dv_sum(v.size(), 0.0);
    for (int r = 0; r < tp; ++r) {
      AttentionShape a = whole_heads(B, S, Hl, Gl, hd);
      a.first_head = r * Hl;
      a.first_kv_head = G >= tp ? r * Gl : 0;
      a.heads_per_kv = H / G;
      const int kv0 = a.first_kv_head * hd;
      const std::vector<T> ql = cols(q, H * hd, r * Hl * hd, Hl * hd);
      T *qld = this->dev(ql), *kld = this->dev(cols(k, G * hd, kv0, Gl * hd)), *vld = this->dev(cols(v, G * hd, kv0, Gl * hd));
      T* ol = this->dev(std::vector<T>(ql.size()));
      Acc* lsel = this->dev(std::vector<Acc>(size_t(B) * Hl * S));
      T *dql = this->dev(std::vector<T>(ql.size())), *dkl = this->dev(std::vector<T>(size_t(B) * S * Gl * hd)),
        *dvl = this->dev(std::vector<T>(size_t(B) * S * Gl * hd));
      this->be->attention_forward(ol, lsel, qld, kld, vld, a);
      this->be->attention_backward(dql, dkl, dvl, this->dev(cols(dout, H * hd, r * Hl * hd, Hl * hd)), ol, lsel, qld, kld, vld, a);
      expect_close(this->host(ol, ql.size()), cols(whole_out, H * hd, r * Hl * hd, Hl * hd), tol, "slice out");
      expect_close(this->host(dql, ql.size()), cols(whole_dq, H * hd, r * Hl * hd, Hl * hd), tol, "slice dq");
      const std::vector<T> dk_part = this->host(dkl, size_t(B) * S * Gl * hd), dv_part = this->host(dvl, size_t(B) * S * Gl * hd);
      for (size_t row = 0; row < size_t(B) * S; ++row)
        for (int c = 0; c < Gl * hd; ++c) {
          dk_sum[row * G * hd + kv0 + c] += double(dk_part[row * Gl * hd + c]);
          dv_sum[row * G * hd + kv0 + c] += double(dv_part[row * Gl * hd + c]);
        }
    }
    expect_close(dk_sum, whole_dk, tol, "dk summed over the slices");
    expect_close(dv_sum, whole_dv, tol, "dv summed over the slices");
  }
}

// Two sequences of a three-sequence cache (the middle one unused, its
// slots full of a value that would show if read), 70 and 9 positions long,
// written in two steps as generation does: a prompt's rows, then the rest.
// Each row attends to its own sequence's positions up to its own: the rows
// of causal attention over the whole sequence.
TYPED_TEST(BackendOps, KvCacheStoreThenDecodeAttentionMatchesCausalAttention) {
  using T = typename TestFixture::T;
  const int H = 4, hd = 6, positions = 70;
  const std::vector<int> length = {70, 0, 9};
  for (int G : {1, 2, 4}) {
    SCOPED_TRACE(::testing::Message() << "G=" << G);
    const KvCacheShape cache{3, G, positions, hd};
    const size_t cache_size = size_t(3) * G * positions * hd;
    T* k_cache = this->dev(std::vector<T>(cache_size, T(50)));
    T* v_cache = this->dev(std::vector<T>(cache_size, T(50)));
    std::vector<typename TestFixture::Qkv> inputs;
    for (int len : length) inputs.push_back(this->attention_inputs(1, len, H, G, hd));
    for (int step = 0; step < 2; ++step) {
      // Step 0: positions [0, 40) of sequence 0 and [0, 4) of sequence 2; step 1: the rest.
      std::vector<int32_t> seq, pos;
      std::vector<T> q, k, v;
      for (int s : {2, 0}) {
        const int split = s == 0 ? 40 : 4, from = step == 0 ? 0 : split, to = step == 0 ? split : length[s];
        for (int p = from; p < to; ++p) {
          seq.push_back(s);
          pos.push_back(p);
          // Appends position p's row of x (rows of `width`) to `to`.
          const auto append_row = [p](std::vector<T>& to, const std::vector<T>& x, int width) {
            to.insert(to.end(), x.begin() + ptrdiff_t(p) * width, x.begin() + ptrdiff_t(p + 1) * width);
          };
          append_row(q, inputs[s].q, H * hd);
          append_row(k, inputs[s].k, G * hd);
          append_row(v, inputs[s].v, G * hd);
        }
      }
      const int n = int(seq.size());
      AttentionShape a = whole_heads(1, 1, H, G, hd);
      int32_t *seq_d = this->dev(seq), *pos_d = this->dev(pos);
      this->be->kv_cache_store(k_cache, this->dev(k), seq_d, pos_d, n, cache);
      this->be->kv_cache_store(v_cache, this->dev(v), seq_d, pos_d, n, cache);
      T* out = this->dev(std::vector<T>(q.size(), T(-7)));
      this->be->attention_decode(out, this->dev(q), k_cache, v_cache, seq_d, pos_d, n, a, cache);
      const std::vector<T> got = this->host(out, q.size()), stored = this->host(k_cache, cache_size);
      for (int i = 0; i < n; ++i) {
        const int s = seq[size_t(i)], p = pos[size_t(i)];
        for (int g = 0; g < G; ++g)
          for (int c = 0; c < hd; ++c)
            ASSERT_EQ(stored[((size_t(s) * G + g) * positions + p) * hd + c], k[(size_t(i) * G + g) * hd + c])
                << "stored key of row " << i;
        const Vec whole = ref_attention(to_double(inputs[size_t(s)].q), to_double(inputs[size_t(s)].k),
                                        to_double(inputs[size_t(s)].v), 1, length[size_t(s)], H, G, hd);
        const Vec expected(whole.begin() + ptrdiff_t(p) * H * hd, whole.begin() + ptrdiff_t(p + 1) * H * hd);
        const std::vector<T> row(got.begin() + ptrdiff_t(i) * H * hd, got.begin() + ptrdiff_t(i + 1) * H * hd);
        // As AttentionForwardMatchesNaive: scores of hd products, a sum over
        // up to `positions` keys and another with v; the output rounded.
        const double ops = 4.0 * std::sqrt(double(hd)) * hd + 2.0 * positions + 8.0;
        expect_close(row, expected, ulps<T>(ops, 2), "decode attention of sequence " + std::to_string(s) +
                                                         " position " + std::to_string(p));
      }
    }
  }
}

TYPED_TEST(BackendOps, GeluForwardAndBackward) {
  using T = typename TestFixture::T;
  const size_t n = 13;
  std::vector<T> x(n);
  for (size_t i = 0; i < n; ++i) x[i] = T(-4.0 + 8.0 * double(i) / double(n - 1) + 0.01);
  T *xd = this->dev(x), *out = this->dev(std::vector<T>(n));
  this->be->gelu_forward(out, xd, n);
  Vec expected(n);
  for (size_t i = 0; i < n; ++i) expected[i] = ref_gelu(double(x[i]));
  // A cubic, a tanh of an argument up to 4 (its error amplified by the
  // argument), and three products.
  expect_close(this->host(out, n), expected, ulps<T>(16, 1), "gelu");

  // din is written, not accumulated: what it held before must not show.
  std::vector<T> dout = this->rnd(n);
  T* dind = this->dev(this->rnd(n));
  this->be->gelu_backward(dind, this->dev(dout), xd, n);
  Vec fd(n);
  for (size_t i = 0; i < n; ++i) {
    const double h = 1e-6, xi = double(x[i]);
    fd[i] = double(dout[i]) * (ref_gelu(xi + h) - ref_gelu(xi - h)) / (2 * h);
  }
  expect_close(this->host(dind, n), fd, fd_tol<T>(), "gelu backward");
}

TYPED_TEST(BackendOps, SoftmaxForwardAndBackward) {
  using T = typename TestFixture::T;
  const int n = 5, c = 7;
  std::vector<T> x = this->rnd(n * c, -3, 3);
  for (int j = 0; j < c; ++j) x[4 * c + j] += T(300);  // a shifted row: needs the max subtracted
  T* p = this->dev(std::vector<T>(n * c));
  this->be->softmax_forward(p, this->dev(x), n, c);
  // The exponent of x - max (an error of |x - max| <= 6 ulps of 306 in the
  // shifted row, amplified by up to 6), a sum of c terms and a quotient.
  expect_close(this->host(p, n * c), ref_softmax(to_double(x), n, c), ulps<T>(64 + c, 1), "softmax");

  // Backward on an unshifted input, so that finite differences stay accurate.
  const std::vector<T> x2 = this->rnd(n * c, -3, 3);
  this->be->softmax_forward(p, this->dev(x2), n, c);
  std::vector<T> dp = this->rnd(n * c), dx = this->rnd(n * c);
  T* dxd = this->dev(dx);
  this->be->softmax_backward(dxd, this->dev(dp), p, n, c);
  const Vec w = to_double(dp);
  const Vec fd = fd_grad([&](const Vec& xx) { return dot(ref_softmax(xx, n, c), w); }, to_double(x2));
  expect_close(this->host(dxd, n * c), add(to_double(dx), fd), fd_tol<T>(), "softmax backward");
}

// Logits, statistics and losses are Acc: row_max and ce_partials run on
// be.acc(), ce_finish on be, writing dlogits in T.
TYPED_TEST(BackendOps, CrossEntropy) {
  using T = typename TestFixture::T;
  using Acc = typename TestFixture::Acc;
  auto& be = *this->be;
  auto& acc = be.acc();
  const int n = 5, v = 7;
  std::vector<Acc> logits = this->template rnd<Acc>(n * v, -3, 3);
  for (int j = 0; j < v; ++j) logits[2 * v + j] += Acc(500);  // needs the max subtracted
  const std::vector<int32_t> targets = {0, 6, 3, 3, 1};
  const int32_t* tgt = this->dev(targets);
  const double dscale = 0.25;
  Vec ref_loss(n), ref_dl(n * v);
  for (int i = 0; i < n; ++i) {
    double mx = -1e300;
    for (int j = 0; j < v; ++j) mx = std::max(mx, double(logits[i * v + j]));
    double s = 0.0;
    for (int j = 0; j < v; ++j) s += std::exp(double(logits[i * v + j]) - mx);
    const double lse = mx + std::log(s);
    ref_loss[i] = lse - double(logits[i * v + targets[i]]);
    for (int j = 0; j < v; ++j) ref_dl[i * v + j] = (std::exp(double(logits[i * v + j]) - lse) - (j == targets[i])) * dscale;
  }
  // Exponents of differences up to 6 (503 in the shifted row: its
  // difference is exact but its loss is a difference of numbers near 500),
  // a sum of v terms and a logarithm; dlogits rounded to T once.
  const double loss_tol = ulps<T>(64 + v, 0) * 500, dlogits_tol = ulps<T>(64 + v, 1);
  // The whole vocabulary in one slice: row_max, ce_partials, ce_finish.
  const Acc* lg = this->dev(logits);
  auto cross_entropy = [&](Acc* losses, T* dlogits) {
    Acc *m = this->dev(std::vector<Acc>(n)), *p = this->dev(std::vector<Acc>(2 * n));
    acc.row_max(m, lg, n, v);
    acc.ce_partials(p, lg, m, tgt, n, v, 0);
    be.ce_finish(losses, dlogits, lg, m, p, tgt, n, v, 0, dscale);
  };
  Acc* losses = this->dev(std::vector<Acc>(n, Acc(-1)));
  T* dlogits = this->dev(this->rnd(n * v));  // dlogits is overwritten
  cross_entropy(losses, dlogits);
  expect_close(this->host(losses, n), ref_loss, loss_tol, "losses");
  expect_close(this->host(dlogits, n * v), ref_dl, dlogits_tol, "dlogits");

  Acc* losses2 = this->dev(std::vector<Acc>(n, Acc(-1)));
  cross_entropy(losses2, nullptr);
  expect_close(this->host(losses2, n), ref_loss, loss_tol, "losses without dlogits");

  // Two vocabulary slices [0, 3) and [3, 7), reduced by hand as the TP group
  // would (max, then sums): the same losses, and each slice's dlogits.
  const int cut = 3, widths[2] = {cut, v - cut};
  std::vector<std::vector<Acc>> parts(2);
  std::vector<Acc> mx(n, -std::numeric_limits<Acc>::infinity()), sums(2 * n, Acc(0));
  for (int r = 0; r < 2; ++r) {
    for (int i = 0; i < n; ++i)
      for (int j = 0; j < widths[r]; ++j) parts[r].push_back(logits[i * v + r * cut + j]);
    Acc* m = this->dev(std::vector<Acc>(n));
    acc.row_max(m, this->dev(parts[r]), n, widths[r]);
    const std::vector<Acc> mr = this->host(m, n);
    for (int i = 0; i < n; ++i) mx[i] = std::max(mx[i], mr[i]);
  }
  const Acc* mxd = this->dev(mx);
  for (int r = 0; r < 2; ++r) {
    Acc* p = this->dev(std::vector<Acc>(2 * n));
    acc.ce_partials(p, this->dev(parts[r]), mxd, tgt, n, widths[r], r * cut);
    const std::vector<Acc> pr = this->host(p, 2 * n);
    for (int i = 0; i < 2 * n; ++i) sums[i] += pr[i];
  }
  const Acc* sumsd = this->dev(sums);
  for (int r = 0; r < 2; ++r) {
    Acc* l = this->dev(std::vector<Acc>(n));
    T* dl = this->dev(std::vector<T>(n * widths[r]));
    be.ce_finish(l, dl, this->dev(parts[r]), mxd, sumsd, tgt, n, widths[r], r * cut, dscale);
    expect_close(this->host(l, n), ref_loss, loss_tol, "losses over two slices");
    Vec ref_part;
    for (int i = 0; i < n; ++i)
      for (int j = 0; j < widths[r]; ++j) ref_part.push_back(ref_dl[i * v + r * cut + j]);
    expect_close(this->host(dl, n * widths[r]), ref_part, dlogits_tol, "dlogits of a slice");
  }
}

TYPED_TEST(BackendOps, GatherScatterScaleRowDot) {
  using T = typename TestFixture::T;
  using Acc = typename TestFixture::Acc;
  const int rows = 6, m = 4, d = 7;
  const std::vector<int32_t> idx = {5, 0, 3, 1};
  std::vector<T> src = this->rnd(rows * d);
  T* dst = this->dev(std::vector<T>(m * d, T(-3)));
  this->be->gather_rows(dst, this->dev(src), this->dev(idx), m, d);
  const std::vector<T> gathered = this->host(dst, m * d);
  for (int i = 0; i < m; ++i)
    for (int j = 0; j < d; ++j) EXPECT_EQ(gathered[i * d + j], src[idx[i] * d + j]);

  // scatter_add_rows: dst[idx[i]] += weight[i] * src[i], weight null means 1.
  const std::vector<int32_t> sidx = {2, 5, 0, 3};
  std::vector<T> part = this->rnd(m * d);
  std::vector<Acc> w = this->template rnd<Acc>(m, 0.1, 2.0);
  for (bool weighted : {false, true}) {
    std::vector<T> acc = this->rnd(rows * d);
    Vec expected = to_double(acc);
    for (int i = 0; i < m; ++i)
      for (int j = 0; j < d; ++j) expected[sidx[i] * d + j] += (weighted ? double(w[i]) : 1.0) * double(part[i * d + j]);
    T* accd = this->dev(acc);
    this->be->scatter_add_rows(accd, this->dev(part), this->dev(sidx), weighted ? this->dev(w) : nullptr, m, d);
    expect_close(this->host(accd, acc.size()), expected, ulps<T>(4, 1), weighted ? "scatter_add_rows weighted" : "scatter_add_rows");
  }

  std::vector<T> x = this->rnd(m * d);
  Vec expected(m * d);
  for (int i = 0; i < m; ++i)
    for (int j = 0; j < d; ++j) expected[i * d + j] = double(x[i * d + j]) * double(w[i]);
  T* xd = this->dev(x);
  this->be->scale_rows(xd, this->dev(w), m, d);
  expect_close(this->host(xd, x.size()), expected, ulps<T>(1, 1), "scale_rows");

  std::vector<T> a = this->rnd(m * d), b = this->rnd(m * d);
  Vec ref(m, 0.0);
  for (int i = 0; i < m; ++i)
    for (int j = 0; j < d; ++j) ref[i] += double(a[i * d + j]) * double(b[i * d + j]);
  Acc* out = this->dev(std::vector<Acc>(m, Acc(-5)));
  this->be->row_dot(out, this->dev(a), this->dev(b), m, d);
  expect_close(this->host(out, m), ref, ulps<T>(2 * d, 0), "row_dot");
}

TYPED_TEST(BackendOps, AdamwMatchesPytorchFormulaOverThreeSteps) {
  using T = typename TestFixture::T;
  const size_t n = 9;
  const double lr = 1e-2, b1 = 0.9, b2 = 0.95;
  // eps tiny (the usual case) and eps large next to sqrt(v), so that where eps
  // sits relative to the bias correction matters.
  for (double eps : {1e-8, 0.05}) {
    for (double wd : {0.0, 0.1}) {
      SCOPED_TRACE("eps=" + std::to_string(eps) + " wd=" + std::to_string(wd));
      const double gscale = eps > 1e-3 ? 0.05 : 1.0;
      const double clip_scale = wd > 0 ? 0.375 : 1.0;  // the gradients as clipping scales them
      std::vector<T> p = this->rnd(n);
      T *pd = this->dev(p), *md = this->dev(std::vector<T>(n, T(0))), *vd = this->dev(std::vector<T>(n, T(0)));
      Vec pr = to_double(p), mr(n, 0.0), vr(n, 0.0);
      for (int t = 1; t <= 3; ++t) {
        std::vector<T> g = this->rnd(n, -gscale, gscale);
        const double bc1 = 1 - std::pow(b1, t), bc2 = 1 - std::pow(b2, t);
        for (size_t i = 0; i < n; ++i) {
          const double gi = double(g[i]) * clip_scale;
          pr[i] -= lr * wd * pr[i];
          mr[i] = b1 * mr[i] + (1 - b1) * gi;
          vr[i] = b2 * vr[i] + (1 - b2) * gi * gi;
          const double denom = std::sqrt(vr[i]) / std::sqrt(bc2) + eps;
          pr[i] -= lr / bc1 * mr[i] / denom;
        }
        this->be->adamw(pd, this->dev(g), md, vd, n, AdamWStep{lr, b1, b2, eps, wd, bc1, bc2, clip_scale});
        // About twelve roundings a step and three stored values, carried over the steps.
        const double tol = ulps<T>(16 * t, 3 * t);
        expect_close(this->host(pd, n), pr, tol, "param step " + std::to_string(t));
        expect_close(this->host(md, n), mr, tol, "exp_avg step " + std::to_string(t));
        expect_close(this->host(vd, n), vr, tol, "exp_avg_sq step " + std::to_string(t));
      }
    }
  }
}

}  // namespace
}  // namespace mt
