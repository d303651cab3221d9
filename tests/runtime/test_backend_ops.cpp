// Every kernel of the backend interface (runtime/backend.h) over one table of
// cases, as ggml's test-backend-ops does. A case is data (Case below): the
// kernel, its shape, and each output it compares with the bound that output
// is held to. The table drives two modes:
//
// - Checks (ctest): each case is one test a (backend, precision) of
//   Backends, BackendOps/<backend>_<precision>.<kernel>_<shape>, against a
//   plain double-precision loop written here, its inputs moved to the device
//   through from_host and its results back through to_host.
// - Speed: `build/tests/test_backend_ops --perf [--threads N] [--filter RE]`
//   times the cases marked for it, in every precision: one warm-up call, then
//   calls for 0.2 s, the median call reported, with GFLOP/s for products and
//   attention (attention: the causal half of its products) and GB/s for the
//   rest (each array a kernel reads or writes counted once). ctest never
//   runs it (docs/benchmarks.md, "Kernels").
//
// A new backend gets every case, checked and timed, from one line a precision
// in Backends. EveryKernelHasATest fails when the interface gains a kernel
// that no case here calls.
//
// Two kinds of rows. Toy shapes (a 5 x 7 x 3 product, attention at S = 5)
// reach every path: transposes and strides, vocabulary slices, documents,
// head slices, the key/value cache, and the backward kernels against central
// differences of the double reference (step 1e-6: an error near 1e-10 at the
// values used here, below the 1e-8 allowed for it), which cost a forward pass
// an input element and so stay at toy shapes. The bench config's shapes
// (configs/bench.toml: 1024 tokens, d 256, 8 query heads and 1 kv head of 32,
// F 512, 8 experts top-2 so 256 rows an expert, vocabulary 512) are checked
// by value against the double reference only (forward kernels, and the
// backward ones whose reference is a formula: attention's gradients from the
// reference probabilities, GELU's derivative, RoPE's transpose) and timed;
// RMSNorm's and the softmax's backward at those shapes are timed only.
//
// Bounds come from the precision, never from a measurement. A kernel
// computing in Acc (float32 for bf16, T otherwise) from T-rounded inputs
// differs from the exact result of those inputs by about `ops` roundings in
// Acc (a sum of n terms: at most n, Higham's gamma_n) plus one rounding in T
// of every value it stores and reads back (`stored`), so each case states
// both counts for each output and the bound is ops * eps(Acc) + stored * eps(T)
// (ulps<T>); gradients against central differences are held to fd_tol<T>().
// Backward kernels start from non-zero gradient buffers, because gradient
// kernels accumulate.
#include "runtime/backend.h"

#include <gtest/gtest.h>
#include <sched.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <random>
#include <regex>
#include <set>
#include <stdexcept>
#include <sstream>
#include <string>
#include <thread>
#include <tuple>
#include <type_traits>
#include <variant>
#include <vector>

#include "runtime/threads.h"
#include "test_util.h"

namespace mt {
namespace {

// --- backends -----------------------------------------------------------------

template <typename T>
const char* precision_name() {
  return std::is_same_v<T, float> ? "float32" : std::is_same_v<T, double> ? "float64" : "bf16";
}

template <typename T>
struct Cpu {
  using Scalar = T;
  static std::string name() { return std::string("cpu_") + precision_name<T>(); }
  static std::unique_ptr<Backend<T>> make() { return make_cpu_backend<T>(); }
};

// Every backend in every precision: a new backend is one line a precision,
// and runs every case of the table in both modes.
using Backends = std::tuple<Cpu<float>, Cpu<double>, Cpu<bf16>>;

// --- bounds -------------------------------------------------------------------

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

// What one output is held to, a function of the precision alone.
struct Bound {
  enum Kind { kExact, kRoundings, kFiniteDifferences } kind = kExact;
  double ops = 0, stored = 0;  // kRoundings: ulps<T>(ops, stored)
  double scale = 1;            // times the size of what cancels in it
  bool float64 = false;        // rounded in double whatever T (sum_squares)

  template <typename T>
  double tol() const {
    switch (kind) {
      case kExact: return 0.0;
      case kRoundings: return scale * (float64 ? ulps<double>(ops, stored) : ulps<T>(ops, stored));
      case kFiniteDifferences: return fd_tol<T>();
    }
    return 0.0;
  }
  std::string text() const {
    std::ostringstream s;
    if (kind == kExact) s << "exact";
    if (kind == kFiniteDifferences) s << "fd_tol (central differences)";
    if (kind == kRoundings) {
      if (scale != 1) s << scale << " x ";
      s << (float64 ? "ulps<double>(" : "ulps<T>(") << ops << ", " << stored << ")";
    }
    return s.str();
  }
};
Bound exact() { return {}; }
Bound roundings(double ops, double stored, double scale = 1) { return {Bound::kRoundings, ops, stored, scale}; }
Bound finite_differences() { return {Bound::kFiniteDifferences}; }

// --- the case table -----------------------------------------------------------

enum class Kernel {
  memory, copy, fill, round_from_acc,
  gemm, gemm_acc, gemm_grouped, gemm_acc_grouped,
  axpy, scale, sum_squares,
  embedding_forward, embedding_backward,
  rmsnorm_forward, rmsnorm_backward,
  rope_forward, rope_backward,
  attention_forward, attention_backward, attention_head_slice, attention_decode,
  attention_blocks, attention_merge,
  gelu_forward, gelu_backward, swiglu_forward, swiglu_backward, sigmoid_forward, sigmoid_backward,
  softmax_forward, softmax_backward, cross_entropy,
  gather_rows, scatter_add_rows, scale_rows, row_dot,
  adamw,
};

const char* kernel_name(Kernel k) {
  switch (k) {
    case Kernel::memory: return "memory";
    case Kernel::copy: return "copy";
    case Kernel::fill: return "fill";
    case Kernel::round_from_acc: return "round_from_acc";
    case Kernel::gemm: return "gemm";
    case Kernel::gemm_acc: return "gemm_acc";
    case Kernel::gemm_grouped: return "gemm_grouped";
    case Kernel::gemm_acc_grouped: return "gemm_acc_grouped";
    case Kernel::axpy: return "axpy";
    case Kernel::scale: return "scale";
    case Kernel::sum_squares: return "sum_squares";
    case Kernel::embedding_forward: return "embedding_forward";
    case Kernel::embedding_backward: return "embedding_backward";
    case Kernel::rmsnorm_forward: return "rmsnorm_forward";
    case Kernel::rmsnorm_backward: return "rmsnorm_backward";
    case Kernel::rope_forward: return "rope_forward";
    case Kernel::rope_backward: return "rope_backward";
    case Kernel::attention_forward: return "attention_forward";
    case Kernel::attention_backward: return "attention_backward";
    case Kernel::attention_head_slice: return "attention_head_slice";
    case Kernel::attention_decode: return "attention_decode";
    case Kernel::attention_blocks: return "attention_blocks";
    case Kernel::attention_merge: return "attention_merge";
    case Kernel::gelu_forward: return "gelu_forward";
    case Kernel::gelu_backward: return "gelu_backward";
    case Kernel::swiglu_forward: return "swiglu_forward";
    case Kernel::swiglu_backward: return "swiglu_backward";
    case Kernel::sigmoid_forward: return "sigmoid_forward";
    case Kernel::sigmoid_backward: return "sigmoid_backward";
    case Kernel::softmax_forward: return "softmax_forward";
    case Kernel::softmax_backward: return "softmax_backward";
    case Kernel::cross_entropy: return "cross_entropy";
    case Kernel::gather_rows: return "gather_rows";
    case Kernel::scatter_add_rows: return "scatter_add_rows";
    case Kernel::scale_rows: return "scale_rows";
    case Kernel::row_dot: return "row_dot";
    case Kernel::adamw: return "adamw";
  }
  return "?";
}

// A number in a test name: gtest filters split on '-' and '.'.
std::string num(double x) {
  char s[32];
  std::snprintf(s, sizeof s, "%g", x);
  std::string out;
  for (const char* p = s; *p; ++p)
    if (*p != '+') out += *p == '.' ? 'p' : *p == '-' ? 'm' : *p;
  return out;
}
const char* tr(Trans t) { return t == Trans::N ? "N" : "T"; }
template <typename... A>
std::string cat(const A&... a) {
  std::ostringstream s;
  (s << ... << a);
  return s.str();
}
// A product's alpha and beta in its name: nothing for 1 and 0.
std::string scalars(double alpha, double beta) {
  if (alpha == 1 && beta == 1) return "_accumulate";
  return alpha == 1 && beta == 0 ? "" : cat("_alpha", num(alpha), "_beta", num(beta));
}

// The shapes, one struct a family of kernels; label() is the shape part of
// a case's name.

// n elements; alpha: axpy's and scale's factor.
struct VectorDims {
  size_t n;
  double alpha = 1;
  std::string label() const { return cat(n); }
};

// C [m, n] = alpha op(A) op(B) + beta C, op(A) [m, k]; each leading dimension
// pad_* wider than its rows. beta = 0: C starts as NaN, which must not show.
struct GemmDims {
  Trans ta, tb;
  int m, n, k;
  double alpha = 1, beta = 0;
  int pad_a = 0, pad_b = 0, pad_c = 0;
  std::string label() const {
    return cat(tr(ta), tr(tb), "_", m, "x", n, "x", k, pad_a || pad_b || pad_c ? "_strided" : "",
               scalars(alpha, beta));
  }
};

// A grouped product: members (m, k) sharing n, the transposes, the leading
// dimensions, alpha and beta.
struct GroupedDims {
  Trans ta, tb;
  int n;
  std::vector<std::pair<int, int>> members;
  double alpha, beta;
  int lda, ldb, ldc;
  std::string label() const {
    std::string sizes;
    if (std::all_of(members.begin(), members.end(), [&](const auto& mk) { return mk == members[0]; }))
      sizes = cat("_", members.size(), "_of_", members[0].first, "x", members[0].second);
    else
      for (const auto& [m, k] : members) sizes += cat("_", m, "x", k);
    return cat(tr(ta), tr(tb), "_n", n, sizes, scalars(alpha, beta));
  }
};

// The table rows [start, start + rows) of a vocabulary, width d, looked up by
// `tokens` (some outside the slice when start > 0 or rows < vocabulary).
struct EmbeddingDims {
  int rows, d, start;
  std::vector<int32_t> tokens;
  std::string label() const {
    return cat(rows, "x", d, start ? cat("_from_", start) : "", "_", tokens.size(), "_tokens");
  }
};

// Rows of width d: RMSNorm (eps), the softmax, scale_rows, row_dot.
struct RowsDims {
  int n, d;
  double eps = 0;
  std::string label() const {
    return cat(n, "x", d, eps ? "_eps" + num(eps) : "");
  }
};

// RoPE over [batch*seq, heads, hd]; doc_start: positions reset by documents;
// positions: generation's rows, each at its own position below max_positions.
struct RopeDims {
  int batch, seq, heads, hd;
  double theta, interpolation;
  std::vector<int32_t> doc_start = {};
  std::vector<int32_t> positions = {};
  int max_positions = 0;
  std::string label() const {
    return cat(positions.empty() ? cat(batch, "x", seq, "x") : cat(positions.size(), "_rows_below_", max_positions, "_"),
               heads, "x", hd, "_theta", num(theta), "_interp", num(interpolation), doc_start.empty() ? "" : "_reset");
  }
};

// Causal attention of whole heads; documents: document_starts' masks;
// differences: the backward against central differences (toy shapes), not
// against the reference's probabilities.
struct AttentionDims {
  int B, S, H, G, hd;
  bool documents = false;
  bool differences = false;
  std::string label() const {
    return cat("B", B, "_S", S, "_H", H, "_G", G, "_hd", hd, documents ? "_documents" : "");
  }
};

// Context parallelism's blocks (AttentionShape's block form): a sequence of
// S cut into 2 cp chunks, CP rank r holding chunks r and 2 cp - 1 - r; each
// rank's queries against each rank's keys and values.
struct RingDims {
  int B, S, H, G, hd, cp;
  bool documents = false;
  std::string label() const {
    return cat("B", B, "_S", S, "_H", H, "_G", G, "_hd", hd, "_cp", cp, documents ? "_documents" : "");
  }
};

// attention_merge over [B*S, H*hd] outputs and [B, H, S] log-sum-exps.
struct MergeDims {
  int B, S, H, hd;
  std::string label() const { return cat("B", B, "_S", S, "_H", H, "_hd", hd); }
};

// A key/value cache of one sequence a length (0: a slot never written).
struct CacheDims {
  int H, G, hd, positions;
  std::vector<int> lengths;
  std::string label() const {
    std::string s = cat("H", H, "_G", G, "_hd", hd, "_lengths");
    for (int l : lengths) s += cat("_", l);
    return s;
  }
};

// Logits [targets.size(), v], split at `cut` into two vocabulary slices.
struct CrossEntropyDims {
  int v, cut;
  std::vector<int32_t> targets;
  std::string label() const {
    return cat(targets.size(), "x", v, "_slices_at_", cut);
  }
};

// Rows of width d picked by `index` among `rows`; weighted: scatter_add_rows'
// weights.
struct IndexDims {
  int rows, d;
  std::vector<int32_t> index;
  bool weighted = false;
  std::string label() const {
    return cat(index.size(), "_of_", rows, "x", d, weighted ? "_weighted" : "");
  }
};

// `steps` AdamW steps over n elements, the gradients scaled by grad_scale.
struct AdamwDims {
  size_t n;
  double eps, weight_decay, grad_scale;
  int steps;
  std::string label() const {
    return cat(n, "_eps", num(eps), "_wd", num(weight_decay), "_clip", num(grad_scale));
  }
};

using Dims = std::variant<VectorDims, GemmDims, GroupedDims, EmbeddingDims, RowsDims, RopeDims, AttentionDims,
                          RingDims, MergeDims, CacheDims, CrossEntropyDims, IndexDims, AdamwDims>;

// One compared output and its bound.
struct Check {
  std::string output;
  Bound bound;
};

struct Case {
  Kernel kernel;
  Dims dims;
  std::vector<Check> checks;  // empty: timed only
  bool test = true;           // a ctest test in every precision
  bool perf = false;          // timed by --perf
  std::string role = "";      // where the bench step calls it (printed by --perf)

  std::string label() const {
    return std::visit([](const auto& d) { return d.label(); }, dims);
  }
  std::string name() const { return std::string(kernel_name(kernel)) + "_" + label(); }
  const Bound& bound(const std::string& output) const {
    for (const Check& c : checks)
      if (c.output == output) return c.bound;
    throw std::logic_error(name() + " states no bound for " + output);
  }
  template <typename T>
  std::string bounds_text() const {
    std::ostringstream s;
    for (const Check& c : checks)
      s << (&c == &checks.front() ? "" : "; ") << c.output << ": " << c.bound.text() << " = " << c.bound.tol<T>();
    return s.str();
  }
};

// Scores are sums of hd products, exponentiated (an error in a score of size
// up to 4 * hd / sqrt(hd) is amplified by that size), summed over S and
// summed over S again with v; the output is rounded, and so are the
// probabilities multiplying v.
double attention_ops(int hd, int S) { return 4.0 * std::sqrt(double(hd)) * hd + 2.0 * S + 8.0; }

// A product's C: a sum of k products (2k roundings), plus 4 for alpha and
// beta unless they are 1 and 0 (a group: its largest k); C stored in T
// once, or kept in Acc by the _acc kernels.
Bound product_bound(Kernel kernel, const Dims& dims) {
  const bool group = std::holds_alternative<GroupedDims>(dims);
  int k = group ? 0 : std::get<GemmDims>(dims).k;
  if (group)
    for (const auto& member : std::get<GroupedDims>(dims).members) k = std::max(k, member.second);
  const double alpha = group ? std::get<GroupedDims>(dims).alpha : std::get<GemmDims>(dims).alpha;
  const double beta = group ? std::get<GroupedDims>(dims).beta : std::get<GemmDims>(dims).beta;
  const bool stored = kernel == Kernel::gemm || kernel == Kernel::gemm_grouped;
  return roundings(2.0 * k + (alpha == 1 && beta == 0 ? 0 : 4), stored ? 1 : 0);
}

// Each output a case compares and its bound, derived from the kernel and
// its shape by the formulas below; a row of the table gives only those two.
std::vector<Check> checks_of(Kernel kernel, const Dims& dims) {
  switch (kernel) {
    case Kernel::memory: return {{"every helper", exact()}};
    case Kernel::copy:
    case Kernel::round_from_acc: return {{"dst", exact()}};
    case Kernel::fill: return {{"x", exact()}};
    case Kernel::gemm:
    case Kernel::gemm_acc:
    case Kernel::gemm_grouped:
    case Kernel::gemm_acc_grouped: return {{"C", product_bound(kernel, dims)}};
    case Kernel::axpy: return {{"y", roundings(2, 1)}};
    case Kernel::scale: return {{"x", roundings(1, 1)}};
    case Kernel::sum_squares:
      // Summed in double for any T: n + 1 double roundings.
      return {{"sum", {Bound::kRoundings, double(std::get<VectorDims>(dims).n) + 1, 1, 1, true}}};
    case Kernel::embedding_forward: return {{"out", exact()}};
    case Kernel::embedding_backward:
      return {{"dtable", roundings(double(std::get<EmbeddingDims>(dims).tokens.size()), 0)}};
    case Kernel::rmsnorm_forward: {
      // A sum of d squares, a square root and two products; rstd stays in Acc.
      const int d = std::get<RowsDims>(dims).d;
      return {{"out", roundings(d + 8, 1)}, {"rstd", roundings(d + 4, 0)}};
    }
    case Kernel::rmsnorm_backward: return {{"dx", finite_differences()}, {"dg", finite_differences()}};
    case Kernel::rope_forward:
      // The angle position / f * theta^(-2i/hd) (a power, a quotient, a
      // product) and its cosine and sine, then two products and a sum.
      return {{"x", roundings(16, 1)}};
    case Kernel::rope_backward:
      // dot(R x, y) == dot(x, R^T y): sums of N terms of 16-ulp values (the
      // bound times sqrt(N)); R^T R x == x: two rotations.
      return {{"dot", roundings(16, 1)}, {"R^T R x", roundings(32, 2)}};
    case Kernel::attention_forward: {
      const AttentionDims& a = std::get<AttentionDims>(dims);
      const double ops = attention_ops(a.hd, a.S);
      return {{"out", roundings(ops, 2)}, {"lse", roundings(ops, 0)}};
    }
    case Kernel::attention_backward: {
      // Against central differences, or against the gradients of the
      // reference's own probabilities, each element within the rounding of
      // its terms (RefAttentionGrads): a probability (the forward's score
      // error, amplified) and the stored output under D, dP and D (hd terms
      // each), dS and its sum over S keys or H queries per key; P and dS are
      // stored in T, and so is the result.
      const AttentionDims& a = std::get<AttentionDims>(dims);
      const Bound b = a.differences ? finite_differences()
                                    : roundings(4.0 * std::sqrt(double(a.hd)) * a.hd + 2.0 * a.hd + a.H * a.S + 8.0, 4);
      return {{"dq", b}, {"dk", b}, {"dv", b}};
    }
    case Kernel::attention_blocks: {
      // Each block's out and lse as attention_forward's over the whole
      // sample's length (a block's rows see at most that many keys); the
      // gradients as attention_backward's, dq rounded to T once more for
      // each of the cp blocks that add into it.
      const RingDims& a = std::get<RingDims>(dims);
      const double ops = attention_ops(a.hd, a.S);
      const Bound grads = roundings(4.0 * std::sqrt(double(a.hd)) * a.hd + 2.0 * a.hd + a.H * a.S + 8.0, 4);
      return {{"out", roundings(ops, 2)}, {"lse", roundings(ops, 0)}, {"dq", roundings(grads.ops, 4 + a.cp)},
              {"dk", grads}, {"dv", grads}};
    }
    case Kernel::attention_merge:
      // The weights exp(lse - lse') in double from log-sum-exps up to 4 in
      // size (an exponent up to 8, rounded in double: 8 ulps of double in
      // the weight), rounded to Acc, then two products and a sum in Acc:
      // 4 + 8 roundings, the output kept in Acc. lse' = max + log1p(exp(-|d|))
      // in double, rounded to Acc once.
      return {{"out", roundings(16, 0)}, {"lse", roundings(4, 0)}};
    case Kernel::attention_head_slice: {
      // Two roundings of the same values, each as far from the exact one as
      // the forward allows (forward and backward: sums over 2S).
      const AttentionDims& a = std::get<AttentionDims>(dims);
      return {{"slice", roundings(4.0 * std::sqrt(double(a.hd)) * a.hd + 4.0 * a.S + 8.0, 4, 2)}};
    }
    case Kernel::attention_decode: {
      // As attention_forward over up to `positions` keys.
      const CacheDims& c = std::get<CacheDims>(dims);
      return {{"out", roundings(attention_ops(c.hd, c.positions), 2)}};
    }
    case Kernel::gelu_forward:
      // A cubic, a tanh of an argument up to 4 (its error amplified by the
      // argument), and three products.
      return {{"out", roundings(16, 1)}};
    case Kernel::gelu_backward: return {{"din", finite_differences()}};
    case Kernel::swiglu_forward:
      // exp, a sum, a quotient and two products.
      return {{"out", roundings(8, 1)}};
    case Kernel::swiglu_backward: return {{"dgate", finite_differences()}, {"dup", finite_differences()}};
    case Kernel::sigmoid_forward:
      // exp, a sum and a quotient.
      return {{"y", roundings(4, 1)}};
    case Kernel::sigmoid_backward: return {{"dx", finite_differences()}};
    case Kernel::softmax_forward:
      // The exponent of x - max (an error of |x - max| <= 6 ulps of 306 in
      // the shifted row, amplified by up to 6), a sum of c terms and a
      // quotient.
      return {{"p", roundings(64 + std::get<RowsDims>(dims).d, 1)}};
    case Kernel::softmax_backward: return {{"dx", finite_differences()}};
    case Kernel::cross_entropy: {
      // Exponents of differences up to 6 (503 in the shifted row: its
      // difference is exact but its loss is a difference of numbers near
      // 500), a sum of v terms and a logarithm; dlogits rounded to T once.
      const int v = std::get<CrossEntropyDims>(dims).v;
      return {{"losses", roundings(64 + v, 0, 500)}, {"dlogits", roundings(64 + v, 1)}};
    }
    case Kernel::gather_rows: return {{"dst", exact()}};
    case Kernel::scatter_add_rows: return {{"dst", roundings(4, 1)}};
    case Kernel::scale_rows: return {{"x", roundings(1, 1)}};
    case Kernel::row_dot: return {{"out", roundings(2.0 * std::get<RowsDims>(dims).d, 0)}};
    case Kernel::adamw:
      // About twelve roundings a step and three stored values, carried over
      // the steps: step t is held to t times this.
      return {{"a step", roundings(16, 3)}};
  }
  return {};
}

Case row(Kernel kernel, Dims dims) { return {kernel, dims, checks_of(kernel, dims)}; }

// A group of `count` alike members with the leading dimensions of their own
// shapes.
GroupedDims alike(Trans ta, Trans tb, int count, int m, int n, int k, double beta) {
  return {ta, tb, n, std::vector<std::pair<int, int>>(size_t(count), {m, k}), 1.0, beta,
          ta == Trans::N ? k : m, tb == Trans::N ? n : k, n};
}

// configs/bench.toml: micro-batch 4 of S 256 = 1024 tokens, d 256, H 8
// query heads of 32 and G 1 kv head, F 512, E 8 experts top-2 (256 rows an
// expert on average), vocabulary 512.
constexpr int kBatch = 4, kSeq = 256, kTokens = kBatch * kSeq, kD = 256, kH = 8, kG = 1, kHd = 32, kF = 512, kE = 8,
              kTopK = 2, kVocab = 512;
constexpr int kExpertRows = kTokens * kTopK / kE;
constexpr size_t kResidual = size_t(kTokens) * kD;     // a residual stream: copies, fills, adds
constexpr size_t kWeights = size_t(kE) * kF * kD;      // one layer's expert w1: the optimizer's and norm's share
constexpr size_t kGeluRows = size_t(kTokens) * kTopK;  // every expert's rows, one GELU over them

std::vector<Case> table() {
  std::vector<Case> t;
  const Trans N = Trans::N, T = Trans::T;
  using K = Kernel;
  auto add = [&](Kernel kernel, Dims dims) { t.push_back(row(kernel, std::move(dims))); };

  // Toy shapes: every path of every kernel.
  add(K::memory, VectorDims{13});
  for (Trans ta : {N, T})
    for (Trans tb : {N, T})
      for (Kernel k : {K::gemm, K::gemm_acc}) add(k, GemmDims{ta, tb, 5, 7, 3, 0.7, -0.3, 2, 3, 2});  // all padded
  add(K::gemm, GemmDims{N, N, 3, 5, 7});  // beta = 0 overwrites
  // Members of 300 rows (cut into blocks by the CPU backend), 1 row and 40
  // rows, each with its own inner size, operands and output; leading
  // dimensions with room for any member's op(A) and op(B).
  for (Trans ta : {N, T})
    for (Trans tb : {N, T})
      for (Kernel k : {K::gemm_grouped, K::gemm_acc_grouped})
        add(k, GroupedDims{ta, tb, 7, {{300, 5}, {1, 3}, {40, 6}}, 0.5, -0.25, 302, 9, 8});
  add(K::axpy, VectorDims{11, -1.3});
  add(K::scale, VectorDims{11, 0.37});
  add(K::sum_squares, VectorDims{11});
  // Repeated tokens accumulate; a slice holds tokens 2, 3, 4 of 6.
  for (const EmbeddingDims& d : {EmbeddingDims{6, 7, 0, {3, 1, 3, 0, 5, 3, 1, 2, 3}},
                                 EmbeddingDims{3, 3, 2, {3, 1, 4, 0, 5, 2, 3}}}) {
    add(K::embedding_forward, d);
    add(K::embedding_backward, d);
  }
  // eps large, so that where eps goes matters.
  add(K::rmsnorm_forward, RowsDims{5, 7, 0.05});
  add(K::rmsnorm_backward, RowsDims{5, 7, 0.05});
  // Base, interpolation and reset positions (documents restarting at 0 at
  // rows 3 and 7 of the two samples: positions 0 1 2 0 1, 0 1 0 1 2).
  for (double theta : {10000.0, 7.0})
    for (double interpolation : {1.0, 4.0})
      for (bool reset : {false, true})
        add(K::rope_forward, RopeDims{2, 5, 3, 8, theta, interpolation,
                                      reset ? std::vector<int32_t>{0, 0, 0, 3, 3, 0, 0, 2, 2, 2} : std::vector<int32_t>{}});
  add(K::rope_forward, RopeDims{0, 1, 2, 8, 500.0, 2.0, {}, {5, 0, 63, 17, 17, 2}, 64});  // generation's rows
  add(K::rope_backward, RopeDims{2, 5, 3, 6, 10000.0, 2.0});
  // S = 5 fits in one tile; S = 200 spans several query blocks and key
  // tiles, with a partial last one; 300 query heads to one key/value head
  // are more rows than a query block stacks.
  for (const auto& [S, H, G] : std::vector<std::array<int, 3>>{
           {5, 4, 1}, {5, 4, 2}, {5, 4, 4}, {200, 4, 1}, {200, 4, 2}, {200, 4, 4}, {20, 300, 1}})
    for (bool documents : {false, true}) add(K::attention_forward, AttentionDims{2, S, H, G, 6, documents});
  for (bool documents : {false, true})
    for (int G : {1, 2, 4}) add(K::attention_backward, AttentionDims{2, 5, 4, G, 6, documents, true});
  for (const auto& [S, H, G] : std::vector<std::array<int, 3>>{{200, 4, 1}, {200, 4, 4}, {20, 300, 1}})
    for (bool documents : {false, true}) add(K::attention_backward, AttentionDims{2, S, H, G, 6, documents});
  for (int G : {1, 2, 4}) add(K::attention_head_slice, AttentionDims{2, 5, 4, G, 2});
  for (int G : {1, 2, 4}) add(K::attention_decode, CacheDims{4, G, 6, 70, {70, 0, 9}});
  // Every rank's queries against every rank's keys: blocks that see all,
  // part or none of each other; at S = 600, CP 2 (300 rows a rank) query
  // blocks and key tiles that straddle the gap between a rank's two chunks,
  // and, with documents, key tiles inside a block's range that no row sees;
  // CP 3, an odd ring.
  for (int G : {1, 2, 4})
    for (bool documents : {false, true}) add(K::attention_blocks, RingDims{2, 600, 4, G, 6, 2, documents});
  for (bool documents : {false, true}) add(K::attention_blocks, RingDims{2, 120, 4, 2, 6, 3, documents});
  add(K::attention_merge, MergeDims{2, 5, 3, 6});
  add(K::gelu_forward, VectorDims{13});
  add(K::gelu_backward, VectorDims{13});
  add(K::swiglu_forward, VectorDims{13});
  add(K::swiglu_backward, VectorDims{13});
  add(K::sigmoid_forward, VectorDims{13});
  add(K::sigmoid_backward, VectorDims{13});
  add(K::softmax_forward, RowsDims{5, 7});
  add(K::softmax_backward, RowsDims{5, 7});
  add(K::cross_entropy, CrossEntropyDims{7, 3, {0, 6, 3, 3, 1}});
  add(K::gather_rows, IndexDims{6, 7, {5, 0, 3, 1}});
  for (bool weighted : {false, true}) add(K::scatter_add_rows, IndexDims{6, 7, {2, 5, 0, 3}, weighted});
  add(K::scale_rows, RowsDims{4, 7});
  add(K::row_dot, RowsDims{4, 7});
  // eps tiny (the usual case) and eps large next to sqrt(v), so that where
  // eps sits relative to the bias correction matters; with weight decay, the
  // gradients as clipping scales them.
  for (double eps : {1e-8, 0.05})
    for (double wd : {0.0, 0.1}) add(K::adamw, AdamwDims{9, eps, wd, wd > 0 ? 0.375 : 1.0, 3});

  // The bench config's shapes, checked by value (all but the two whose only
  // check is finite differences) and timed.
  std::mt19937 rng(7);
  auto draw = [&](int count, int below) {
    std::vector<int32_t> v(static_cast<size_t>(count));
    for (auto& x : v) x = int32_t(rng() % uint32_t(below));
    return v;
  };
  auto distinct = [&](int count, int below) {  // `count` different rows of `below`
    std::vector<int32_t> v(static_cast<size_t>(below));
    for (int i = 0; i < below; ++i) v[size_t(i)] = i;
    std::shuffle(v.begin(), v.end(), rng);
    v.resize(size_t(count));
    return v;
  };
  auto bench = [&](Kernel kernel, Dims dims, const char* role, bool checked = true) {
    Case c = row(kernel, std::move(dims));
    c.perf = true;
    c.test = checked;
    c.role = role;
    t.push_back(std::move(c));
  };
  // The model's products as it calls them: forward y = x W^T is (N, T,
  // tokens, out, in); the weight gradient dW += dy^T x is (T, N, out, in,
  // tokens), kept in Acc; the input gradient dx = dy W is (N, N, tokens, in,
  // out).
  bench(K::gemm, GemmDims{N, N, 1024, 1024, 1024}, "a large square: the practical peak");
  bench(K::gemm, GemmDims{N, T, kTokens, kH * kHd, kD}, "q = a wq^T; h = o wo^T");
  bench(K::gemm, GemmDims{N, T, kTokens, kG * kHd, kD}, "k, v = a wk^T, a wv^T (multi-query)");
  bench(K::gemm_acc, GemmDims{T, N, kH * kHd, kD, kTokens, 1, 1}, "dwq += dq^T a; dwo += dh^T o");
  bench(K::gemm_acc, GemmDims{T, N, kG * kHd, kD, kTokens, 1, 1}, "dwk += dk^T a");
  bench(K::gemm, GemmDims{N, N, kTokens, kD, kH * kHd}, "da = dq wq; do = dh wo");
  bench(K::gemm, GemmDims{N, N, kTokens, kD, kG * kHd, 1, 1}, "da += dk wk");
  bench(K::gemm_acc, GemmDims{N, T, kTokens, kE, kD}, "router logits = m wr^T");
  bench(K::gemm_acc, GemmDims{T, N, kE, kD, kTokens, 1, 1}, "dwr += dlogits^T m");
  bench(K::gemm, GemmDims{N, N, kTokens, kD, kE, 1, 1}, "dm += dlogits wr");
  bench(K::gemm_acc, GemmDims{N, T, kTokens, kVocab, kD}, "LM head logits = hf W^T");
  bench(K::gemm_acc, GemmDims{T, N, kVocab, kD, kTokens, 1, 1}, "LM head dW += dlogits^T hf");
  bench(K::gemm, GemmDims{N, N, kTokens, kD, kVocab}, "LM head dhf = dlogits W");
  bench(K::gemm_grouped, alike(N, T, kE, kExpertRows, kF, kD, 0), "experts u = x w1^T");
  bench(K::gemm_grouped, alike(N, T, kE, kExpertRows, kD, kF, 0), "experts y = g w2^T");
  bench(K::gemm_acc_grouped, alike(T, N, kE, kD, kF, kExpertRows, 1), "experts dw2 += dy^T g");
  bench(K::gemm_grouped, alike(N, N, kE, kExpertRows, kF, kD, 0), "experts dg = dy w2");
  bench(K::gemm_acc_grouped, alike(T, N, kE, kF, kD, kExpertRows, 1), "experts dw1 += du^T x");
  bench(K::gemm_grouped, alike(N, N, kE, kExpertRows, kD, kF, 0), "experts dx = du w1");
  bench(K::attention_forward, AttentionDims{kBatch, kSeq, kH, kG, kHd}, "causal attention");
  bench(K::attention_backward, AttentionDims{kBatch, kSeq, kH, kG, kHd}, "its backward");
  bench(K::rope_forward, RopeDims{kBatch, kSeq, kH, kHd, 10000.0, 1.0}, "RoPE on q");
  bench(K::rope_backward, RopeDims{kBatch, kSeq, kH, kHd, 10000.0, 1.0}, "RoPE on dq");
  bench(K::rmsnorm_forward, RowsDims{kTokens, kD, 1e-5}, "RMSNorm");
  bench(K::rmsnorm_backward, RowsDims{kTokens, kD, 1e-5}, "its backward (checked at 5x7)", false);
  bench(K::gelu_forward, VectorDims{kGeluRows * kF}, "GELU over every expert's rows");
  bench(K::gelu_backward, VectorDims{kGeluRows * kF}, "its backward");
  bench(K::swiglu_forward, VectorDims{kGeluRows * kF}, "SwiGLU over every expert's rows (--swiglu)");
  bench(K::swiglu_backward, VectorDims{kGeluRows * kF}, "its backward");
  bench(K::sigmoid_forward, VectorDims{size_t(kTokens)}, "shared expert gate");
  bench(K::sigmoid_backward, VectorDims{size_t(kTokens)}, "its backward");
  bench(K::softmax_forward, RowsDims{kTokens, kE}, "router softmax");
  bench(K::softmax_backward, RowsDims{kTokens, kE}, "its backward (checked at 5x7)", false);
  bench(K::cross_entropy, CrossEntropyDims{kVocab, kVocab / 2, draw(kTokens, kVocab)}, "row_max, ce_partials, ce_finish");
  bench(K::embedding_forward, EmbeddingDims{kVocab, kD, 0, draw(kTokens, kVocab)}, "token embedding");
  bench(K::embedding_backward, EmbeddingDims{kVocab, kD, 0, draw(kTokens, kVocab)}, "its backward");
  // Dispatch: each token's row to its top-2 experts; combine: one expert's
  // rows back to distinct tokens.
  std::vector<int32_t> dispatch = distinct(kTokens, kTokens);
  dispatch.insert(dispatch.end(), dispatch.begin(), dispatch.end());
  std::shuffle(dispatch.begin(), dispatch.end(), rng);
  bench(K::gather_rows, IndexDims{kTokens, kD, dispatch}, "MoE dispatch");
  bench(K::scatter_add_rows, IndexDims{kTokens, kD, distinct(kExpertRows, kTokens), true}, "MoE combine, an expert's rows");
  bench(K::scale_rows, RowsDims{int(kGeluRows), kD}, "routing weights on dy");
  bench(K::row_dot, RowsDims{int(kGeluRows), kD}, "routing weights' gradient");
  bench(K::axpy, VectorDims{kResidual, -1.3}, "residual add");
  bench(K::copy, VectorDims{kResidual}, "residual copy");
  bench(K::fill, VectorDims{kResidual}, "zeroing a gradient");
  bench(K::scale, VectorDims{kWeights, 0.37}, "gradients scaled");
  bench(K::sum_squares, VectorDims{kWeights}, "gradient norm");
  bench(K::round_from_acc, VectorDims{kWeights}, "master weights to bf16");
  bench(K::adamw, AdamwDims{kWeights, 1e-8, 0.1, 0.375, 3}, "AdamW");
  return t;
}

// --- comparisons --------------------------------------------------------------

using Vec = std::vector<double>;

template <typename T>
Vec to_double(const std::vector<T>& v) {
  return Vec(v.begin(), v.end());
}

// Every element within tol of the reference, relative to max(1, |expected|,
// size[i]) (size: what an element's rounding errors scale with, when given);
// the first misses are reported one by one, then their count.
template <typename E>
void expect_close(const std::vector<E>& actual, const Vec& expected, double tol, const std::string& what,
                  const Vec* size = nullptr) {
  ASSERT_EQ(actual.size(), expected.size()) << what;
  size_t misses = 0;
  for (size_t i = 0; i < expected.size(); ++i) {
    const double scale = std::max({1.0, std::abs(expected[i]), size ? (*size)[i] : 0.0});
    const double a = double(actual[i]), allowed = tol * scale;
    if (a == expected[i]) continue;  // equal infinities too: a row that sees no key has lse -inf
    if (!(std::abs(a - expected[i]) <= allowed) && ++misses <= 10)
      ADD_FAILURE() << what << " [" << i << "]: " << a << " against " << expected[i] << ", allowed " << allowed;
  }
  if (misses > 10) ADD_FAILURE() << what << ": " << misses << " of " << expected.size() << " elements out of bound";
}

// Bitwise the values expected.
template <typename E>
void expect_equal(const std::vector<E>& actual, const std::vector<E>& expected, const std::string& what) {
  ASSERT_EQ(actual.size(), expected.size()) << what;
  size_t misses = 0;
  for (size_t i = 0; i < expected.size(); ++i)
    if (!(actual[i] == expected[i]) && ++misses <= 10)
      ADD_FAILURE() << what << " [" << i << "]: " << double(actual[i]) << " against " << double(expected[i]);
  if (misses > 10) ADD_FAILURE() << what << ": " << misses << " of " << expected.size() << " elements differ";
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

// op(A) op(B) [m, n], each element summed over l in order (row by row, so
// that the large products' references vectorize).
Vec ref_product(Trans ta, Trans tb, int m, int n, int k, const Vec& A, int lda, const Vec& B, int ldb) {
  Vec b(size_t(k) * n);  // op(B), dense
  for (int l = 0; l < k; ++l)
    for (int j = 0; j < n; ++j) b[size_t(l) * n + j] = tb == Trans::N ? B[size_t(l) * ldb + j] : B[size_t(j) * ldb + l];
  Vec c(size_t(m) * n, 0.0);
  for (int i = 0; i < m; ++i) {
    double* ci = c.data() + size_t(i) * n;
    for (int l = 0; l < k; ++l) {
      const double a = ta == Trans::N ? A[size_t(i) * lda + l] : A[size_t(l) * lda + i];
      const double* bl = b.data() + size_t(l) * n;
      for (int j = 0; j < n; ++j) ci[j] += a * bl[j];
    }
  }
  return c;
}

Vec ref_rmsnorm(const Vec& x, const Vec& g, int n, int d, double eps, Vec* rstd = nullptr) {
  Vec out(size_t(n) * d);
  if (rstd) rstd->assign(n, 0.0);
  for (int i = 0; i < n; ++i) {
    double ms = 0.0;
    for (int j = 0; j < d; ++j) ms += x[size_t(i) * d + j] * x[size_t(i) * d + j];
    ms /= d;
    const double r = 1.0 / std::sqrt(ms + eps);
    if (rstd) (*rstd)[i] = r;
    for (int j = 0; j < d; ++j) out[size_t(i) * d + j] = x[size_t(i) * d + j] * r * g[j];
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

// The whole model's heads in one call; query head j reads kv head j / (H / G).
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

// Causal attention, with the S x SK probabilities written out. doc_start
// (--reset-attention-mask): query i of sample b sees keys [doc_start[b S + i], i].
// The block form (AttentionShape's): q's S rows a sample at positions
// q_pos, k's and v's SK rows at k_pos, query i seeing key j when
// doc_start[b S + i] <= k_pos[j] <= q_pos[i]; a row that sees no key has
// out 0 and lse -inf.
struct RefAttention {
  Vec out;    // [B*S, H*hd]
  Vec lse;    // [B, H, S]
  Vec probs;  // [B, H, S, SK], 0 where a key is not visible
};
RefAttention ref_attention_of(const Vec& q, const Vec& k, const Vec& v, int B, int S, int H, int G, int hd,
                              const std::vector<int32_t>* doc_start = nullptr,
                              const std::vector<int32_t>* q_pos = nullptr, const std::vector<int32_t>* k_pos = nullptr) {
  const int qs = H * hd, ks = G * hd, SK = k_pos ? int(k_pos->size()) : S;
  RefAttention r{Vec(size_t(B) * S * qs, 0.0), Vec(size_t(B) * H * S), Vec(size_t(B) * H * S * SK, 0.0)};
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < H; ++h) {
      const int g = h / (H / G);
      for (int i = 0; i < S; ++i) {
        const int first = doc_start ? (*doc_start)[size_t(b) * S + i] : 0, p = q_pos ? (*q_pos)[size_t(i)] : i;
        auto seen = [&](int j) {
          const int kp = k_pos ? (*k_pos)[size_t(j)] : j;
          return first <= kp && kp <= p;
        };
        Vec s(SK);
        double mx = -std::numeric_limits<double>::infinity();
        for (int j = 0; j < SK; ++j) {
          if (!seen(j)) continue;
          double acc = 0.0;
          for (int c = 0; c < hd; ++c)
            acc += q[(size_t(b) * S + i) * qs + h * hd + c] * k[(size_t(b) * SK + j) * ks + g * hd + c];
          s[j] = acc / std::sqrt(double(hd));
          mx = std::max(mx, s[j]);
        }
        double sum = 0.0;
        for (int j = 0; j < SK; ++j)
          if (seen(j)) sum += (s[j] = std::exp(s[j] - mx));
        r.lse[(size_t(b) * H + h) * S + i] = sum > 0 ? mx + std::log(sum) : -std::numeric_limits<double>::infinity();
        for (int j = 0; j < SK; ++j) {
          if (!seen(j)) continue;
          s[j] /= sum;
          r.probs[((size_t(b) * H + h) * S + i) * SK + j] = s[j];
          for (int c = 0; c < hd; ++c)
            r.out[(size_t(b) * S + i) * qs + h * hd + c] += s[j] * v[(size_t(b) * SK + j) * ks + g * hd + c];
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
    double mx = x[size_t(i) * c];
    for (int j = 1; j < c; ++j) mx = std::max(mx, x[size_t(i) * c + j]);
    double sum = 0.0;
    for (int j = 0; j < c; ++j) sum += std::exp(x[size_t(i) * c + j] - mx);
    for (int j = 0; j < c; ++j) p[size_t(i) * c + j] = std::exp(x[size_t(i) * c + j] - mx) / sum;
  }
  return p;
}

// --- a case's run -------------------------------------------------------------

// What --perf measured of a case: the median call and its work.
struct Timing {
  double seconds = 0, flops = 0, bytes = 0;
};

// A backend of one precision and the inputs of one case: host values in,
// device copies kept until the run ends, results out. In perf mode timed()
// times the case's kernel call and the case stops there; otherwise it
// returns false and the case goes on to its checks.
template <typename T>
class Ops {
 public:
  using Acc = acc_t<T>;
  Ops(std::unique_ptr<Backend<T>> backend, Timing* timing) : be(std::move(backend)), timing_(timing) {}

  std::unique_ptr<Backend<T>> be;
  std::mt19937 rng{20240611};

  template <typename E = T>
  std::vector<E> rnd(size_t n, double lo = -1.0, double hi = 1.0) {
    std::uniform_real_distribution<double> u(lo, hi);
    std::vector<E> v(n);
    for (auto& x : v) x = E(u(rng));
    return v;
  }
  // A device copy of host values (T on be, Acc on be->acc(), or token ids).
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
  template <typename E>
  std::vector<E> host(const E* device, size_t n) {
    std::vector<E> h(n);
    backend_of<E>().to_host(h.data(), device, n);
    return h;
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
  // The backward cases' start: random inputs of whole heads (with the
  // documents of document_starts when asked), the forward pass run.
  struct AttentionRun {
    Qkv inputs;
    std::vector<int32_t> starts;
    AttentionShape shape;
    T *q, *k, *v, *out;
    Acc* lse;
  };
  AttentionRun attention_run(const AttentionDims& d) {
    Qkv in = attention_inputs(d.B, d.S, d.H, d.G, d.hd);
    T *q = dev(in.q), *k = dev(in.k), *v = dev(in.v), *out = dev(std::vector<T>(in.q.size()));
    Acc* lse = dev(std::vector<Acc>(size_t(d.B) * d.H * d.S));
    AttentionRun a{std::move(in), document_starts(d.B, d.S), whole_heads(d.B, d.S, d.H, d.G, d.hd), q, k, v, out, lse};
    if (d.documents) a.shape.doc_start = dev(a.starts);
    be->attention_forward(a.out, a.lse, a.q, a.k, a.v, a.shape);
    return a;
  }

  // Perf mode: one warm-up run of `call`, then runs for 0.2 s (at least 5),
  // timed one by one; the median run over `calls_per_run` is the time of a
  // call. flops (products) or bytes (the rest) is one call's work.
  template <class F>
  bool timed(double flops, double bytes, F&& call, int calls_per_run = 1) {
    if (!timing_) return false;
    using clock = std::chrono::steady_clock;
    call();
    std::vector<double> runs;
    const auto start = clock::now();
    while (runs.size() < 5 || std::chrono::duration<double>(clock::now() - start).count() < 0.2) {
      const auto t0 = clock::now();
      call();
      runs.push_back(std::chrono::duration<double>(clock::now() - t0).count());
    }
    std::nth_element(runs.begin(), runs.begin() + ptrdiff_t(runs.size() / 2), runs.end());
    *timing_ = {runs[runs.size() / 2] / calls_per_run, flops, bytes};
    return true;
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
  Timing* timing_;
  std::vector<DeviceBuffer<T>> buffers_;
  std::vector<DeviceBuffer<Acc>> acc_buffers_;
  std::vector<DeviceBuffer<T, int32_t>> int_buffers_;
};

// --- one function a family of kernels -------------------------------------------

// alloc, alloc_int, free, to_host, from_host, int_from_host, copy, fill,
// round_from_acc, add_rounded and widen_to_acc on small arrays, exactly.
template <typename T>
void memory_case(Ops<T>& o, const Case& c) {
  using Acc = acc_t<T>;
  auto& be = *o.be;
  const size_t n = std::get<VectorDims>(c.dims).n;
  DeviceBuffer<T> a(be, n);
  DeviceBuffer<T, int32_t> ai(be, 5);
  for (T x : o.host(a.data(), n)) EXPECT_EQ(x, T(0)) << "alloc zero-fills";
  const std::vector<T> h = o.rnd(n);
  be.from_host(a.data(), h.data(), n);
  EXPECT_EQ(o.host(a.data(), n), h);
  T* b = be.alloc(n);
  be.copy(b, a.data(), n);
  EXPECT_EQ(o.host(b, n), h);
  be.fill(b, T(2.5), n);
  for (T x : o.host(b, n)) EXPECT_EQ(x, T(2.5));
  be.free(b);
  // Integers come back through a gather of them as row indices.
  int32_t* zeros = be.alloc_int(4);
  DeviceBuffer<T> rows(be, 4);
  be.gather_rows(rows.data(), a.data(), zeros, 4, 1);
  for (T x : o.host(rows.data(), 4)) EXPECT_EQ(x, h[0]) << "alloc_int zero-fills";
  be.free(zeros);
  const std::vector<int32_t> ih = {3, 12, 7, 0, 9};
  be.int_from_host(ai.data(), ih.data(), 5);
  DeviceBuffer<T> picked(be, 5);
  be.gather_rows(picked.data(), a.data(), ai.data(), 5, 1);
  const std::vector<T> back = o.host(picked.data(), 5);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(back[i], h[ih[i]]);
  // round_from_acc rounds each value to T once.
  const std::vector<Acc> wide = o.template rnd<Acc>(9);
  T* narrow = o.dev(std::vector<T>(9));
  be.round_from_acc(narrow, o.dev(wide), 9);
  const std::vector<T> rounded = o.host(narrow, 9);
  for (int i = 0; i < 9; ++i) EXPECT_EQ(rounded[i], T(wide[i])) << "round_from_acc [" << i << "]";
  // add_rounded sums in Acc and rounds once; widen_to_acc is exact.
  const std::vector<T> base = o.rnd(9);
  T* sum = o.dev(base);
  be.add_rounded(sum, o.dev(wide), 9);
  Acc* widened = o.dev(std::vector<Acc>(9));
  be.widen_to_acc(widened, o.dev(base), 9);
  const std::vector<T> summed = o.host(sum, 9);
  const std::vector<Acc> back_wide = o.host(widened, 9);
  for (int i = 0; i < 9; ++i) {
    EXPECT_EQ(summed[i], T(Acc(base[i]) + wide[i])) << "add_rounded [" << i << "]";
    EXPECT_EQ(back_wide[i], Acc(base[i])) << "widen_to_acc [" << i << "]";
  }
}

// copy, fill and round_from_acc over large arrays, exactly.
template <typename T>
void copy_case(Ops<T>& o, const Case& c) {
  using Acc = acc_t<T>;
  const size_t n = std::get<VectorDims>(c.dims).n;
  if (c.kernel == Kernel::copy) {
    const std::vector<T> src = o.rnd(n);
    const T* s = o.dev(src);
    T* d = o.dev(std::vector<T>(n));
    auto call = [&] { o.be->copy(d, s, n); };
    if (o.timed(0, 2.0 * n * sizeof(T), call)) return;
    call();
    expect_equal(o.host(d, n), src, "copy");
  } else if (c.kernel == Kernel::fill) {
    T* x = o.dev(o.rnd(n));
    auto call = [&] { o.be->fill(x, T(2.5), n); };
    if (o.timed(0, double(n) * sizeof(T), call)) return;
    call();
    expect_equal(o.host(x, n), std::vector<T>(n, T(2.5)), "fill");
  } else {
    const std::vector<Acc> wide = o.template rnd<Acc>(n);
    const Acc* w = o.dev(wide);
    T* narrow = o.dev(std::vector<T>(n));
    auto call = [&] { o.be->round_from_acc(narrow, w, n); };
    if (o.timed(0, double(n) * (sizeof(T) + sizeof(Acc)), call)) return;
    call();
    expect_equal(o.host(narrow, n), std::vector<T>(wide.begin(), wide.end()), "round_from_acc");
  }
}

template <typename T>
void gemm_case(Ops<T>& o, const Case& c) {
  using Acc = acc_t<T>;
  const GemmDims& s = std::get<GemmDims>(c.dims);
  const bool keep = c.kernel == Kernel::gemm_acc;  // the product kept in Acc: nothing rounded to T
  const int m = s.m, n = s.n, k = s.k;
  // op(A) is [m, k], op(B) is [k, n].
  const int a_rows = s.ta == Trans::N ? m : k, a_cols = s.ta == Trans::N ? k : m;
  const int b_rows = s.tb == Trans::N ? k : n, b_cols = s.tb == Trans::N ? n : k;
  const int lda = a_cols + s.pad_a, ldb = b_cols + s.pad_b, ldc = n + s.pad_c;
  const T alpha = T(s.alpha), beta = T(s.beta);
  const std::vector<T> A = o.rnd(size_t(a_rows) * lda), B = o.rnd(size_t(b_rows) * ldb);
  std::vector<T> C = o.rnd(size_t(m) * ldc);
  if (s.beta == 0)  // beta = 0 must not read C
    for (int i = 0; i < m; ++i)
      for (int j = 0; j < n; ++j) C[size_t(i) * ldc + j] = T(std::numeric_limits<float>::quiet_NaN());
  const T *a = o.dev(A), *b = o.dev(B);
  T* ct = keep ? nullptr : o.dev(C);
  Acc* ca = keep ? o.dev(std::vector<Acc>(C.begin(), C.end())) : nullptr;
  auto call = [&] {
    if (keep)
      o.be->gemm_acc(s.ta, s.tb, m, n, k, Acc(alpha), a, lda, b, ldb, Acc(beta), ca, ldc);
    else
      o.be->gemm(s.ta, s.tb, m, n, k, alpha, a, lda, b, ldb, beta, ct, ldc);
  };
  if (o.timed(2.0 * m * n * k, 0, call)) return;
  call();
  const Vec p = ref_product(s.ta, s.tb, m, n, k, to_double(A), lda, to_double(B), ldb);
  Vec expected = to_double(C);  // padding columns must stay as they were
  for (int i = 0; i < m; ++i)
    for (int j = 0; j < n; ++j)
      expected[size_t(i) * ldc + j] =
          double(alpha) * p[size_t(i) * n + j] + (s.beta == 0 ? 0.0 : double(beta) * double(C[size_t(i) * ldc + j]));
  const std::string what = std::string(kernel_name(c.kernel)) + " ta=" + tr(s.ta) + " tb=" + tr(s.tb);
  const double tol = c.bound("C").tol<T>();
  if (keep)
    expect_close(o.host(ca, C.size()), expected, tol, what);
  else
    expect_close(o.host(ct, C.size()), expected, tol, what);
}

// The same results as one gemm a member.
template <typename T>
void grouped_case(Ops<T>& o, const Case& c) {
  using Acc = acc_t<T>;
  const GroupedDims& s = std::get<GroupedDims>(c.dims);
  const bool keep = c.kernel == Kernel::gemm_acc_grouped;
  const T alpha = T(s.alpha), beta = T(s.beta);
  std::vector<std::vector<T>> A, B, C;
  std::vector<GroupMember<T, T>> members;
  std::vector<GroupMember<T, Acc>> acc_members;
  std::vector<T*> c_dev;
  std::vector<Acc*> c_acc_dev;
  double flops = 0;
  for (const auto& [m, k] : s.members) {
    const int a_rows = s.ta == Trans::N ? m : k, b_rows = s.tb == Trans::N ? k : s.n;
    A.push_back(o.rnd(size_t(a_rows) * s.lda));
    B.push_back(o.rnd(size_t(b_rows) * s.ldb));
    C.push_back(o.rnd(size_t(m) * s.ldc));
    if (s.beta == 0)  // beta = 0 must not read C
      for (int i = 0; i < m; ++i)
        for (int j = 0; j < s.n; ++j) C.back()[size_t(i) * s.ldc + j] = T(std::numeric_limits<float>::quiet_NaN());
    const T *ad = o.dev(A.back()), *bd = o.dev(B.back());
    if (keep) {
      c_acc_dev.push_back(o.dev(std::vector<Acc>(C.back().begin(), C.back().end())));
      acc_members.push_back({m, k, ad, bd, c_acc_dev.back()});
    } else {
      c_dev.push_back(o.dev(C.back()));
      members.push_back({m, k, ad, bd, c_dev.back()});
    }
    flops += 2.0 * m * s.n * k;
  }
  auto call = [&] {
    if (keep)
      o.be->gemm_acc_grouped(s.ta, s.tb, s.n, Acc(alpha), s.lda, s.ldb, Acc(beta), s.ldc, acc_members);
    else
      o.be->gemm_grouped(s.ta, s.tb, s.n, alpha, s.lda, s.ldb, beta, s.ldc, members);
  };
  if (o.timed(flops, 0, call)) return;
  call();
  Vec expected, got;
  for (size_t g = 0; g < s.members.size(); ++g) {
    const auto [m, k] = s.members[g];
    const Vec p = ref_product(s.ta, s.tb, m, s.n, k, to_double(A[g]), s.lda, to_double(B[g]), s.ldb);
    for (int i = 0; i < m; ++i)
      for (int j = 0; j < s.ldc; ++j) {
        const double cij = double(C[g][size_t(i) * s.ldc + j]);
        // the padding column stays as it was
        expected.push_back(j < s.n ? double(alpha) * p[size_t(i) * s.n + j] + (s.beta == 0 ? 0.0 : double(beta) * cij)
                                   : cij);
      }
    const size_t size = size_t(m) * s.ldc;
    if (keep)
      for (Acc x : o.host(c_acc_dev[g], size)) got.push_back(double(x));
    else
      for (T x : o.host(c_dev[g], size)) got.push_back(double(x));
  }
  expect_close(got, expected, c.bound("C").tol<T>(),
               std::string(kernel_name(c.kernel)) + " ta=" + tr(s.ta) + " tb=" + tr(s.tb));
}

// axpy, scale and sum_squares.
template <typename T>
void vector_case(Ops<T>& o, const Case& c) {
  const VectorDims& s = std::get<VectorDims>(c.dims);
  const size_t n = s.n;
  const T alpha = T(s.alpha);
  const std::vector<T> x = o.rnd(n);
  if (c.kernel == Kernel::axpy) {
    const std::vector<T> y = o.rnd(n);
    const T* xd = o.dev(x);
    T* yd = o.dev(y);
    auto call = [&] { o.be->axpy(n, alpha, xd, yd); };
    if (o.timed(0, 3.0 * n * sizeof(T), call)) return;
    call();
    Vec expected(n);
    for (size_t i = 0; i < n; ++i) expected[i] = double(y[i]) + double(alpha) * double(x[i]);
    expect_close(o.host(yd, n), expected, c.bound("y").tol<T>(), "axpy");
  } else if (c.kernel == Kernel::scale) {
    T* xd = o.dev(x);
    // Timed as x *= alpha, x *= 1 / alpha: repeated, x would underflow.
    const T inverse = T(1 / double(alpha));
    auto pair = [&] {
      o.be->scale(n, alpha, xd);
      o.be->scale(n, inverse, xd);
    };
    if (o.timed(0, 2.0 * n * sizeof(T), pair, 2)) return;
    o.be->scale(n, alpha, xd);
    Vec expected(n);
    for (size_t i = 0; i < n; ++i) expected[i] = double(x[i]) * double(alpha);
    expect_close(o.host(xd, n), expected, c.bound("x").tol<T>(), "scale");
  } else {
    const T* xd = o.dev(x);
    double got = 0;
    auto call = [&] { got = o.be->sum_squares(n, xd); };
    if (o.timed(0, double(n) * sizeof(T), call)) return;
    call();
    double ss = 0.0;
    for (T v : x) ss += double(v) * double(v);
    EXPECT_NEAR(got, ss, c.bound("sum").tol<T>() * ss) << "sum_squares";
  }
}

// The table's rows of the tokens (0 outside the slice); the backward adds
// each token's gradient into its row, accumulating into dtable.
template <typename T>
void embedding_case(Ops<T>& o, const Case& c) {
  using Acc = acc_t<T>;
  const EmbeddingDims& s = std::get<EmbeddingDims>(c.dims);
  const std::vector<int32_t>& tokens = s.tokens;
  const int n = int(tokens.size()), d = s.d, start = s.start, rows = s.rows;
  auto inside = [&](int t) { return tokens[size_t(t)] >= start && tokens[size_t(t)] < start + rows; };
  const int32_t* tok = o.dev(tokens);
  if (c.kernel == Kernel::embedding_forward) {
    const std::vector<T> table = o.rnd(size_t(rows) * d);
    const T* tab = o.dev(table);
    T* out = o.dev(std::vector<T>(size_t(n) * d, T(-9)));
    auto call = [&] { o.be->embedding_forward(out, tab, tok, n, d, start, rows); };
    if (o.timed(0, 2.0 * n * d * sizeof(T) + 4.0 * n, call)) return;
    call();
    std::vector<T> expected(size_t(n) * d, T(0));
    for (int t = 0; t < n; ++t)
      if (inside(t))
        for (int j = 0; j < d; ++j) expected[size_t(t) * d + j] = table[size_t(tokens[size_t(t)] - start) * d + j];
    expect_equal(o.host(out, expected.size()), expected, "embedding_forward");
  } else {
    const std::vector<T> dout = o.rnd(size_t(n) * d);
    const std::vector<Acc> dtable = o.template rnd<Acc>(size_t(rows) * d);
    const T* dd = o.dev(dout);
    Acc* dt = o.dev(dtable);
    auto call = [&] { o.be->embedding_backward(dt, dd, tok, n, d, start, rows); };
    if (o.timed(0, double(n) * d * (sizeof(T) + 2 * sizeof(Acc)) + 4.0 * n, call)) return;
    call();
    Vec expected = to_double(dtable);
    for (int t = 0; t < n; ++t)
      if (inside(t))
        for (int j = 0; j < d; ++j) expected[size_t(tokens[size_t(t)] - start) * d + j] += double(dout[size_t(t) * d + j]);
    expect_close(o.host(dt, dtable.size()), expected, c.bound("dtable").tol<T>(), "embedding_backward");
  }
}

template <typename T>
void rmsnorm_case(Ops<T>& o, const Case& c) {
  using Acc = acc_t<T>;
  const RowsDims& s = std::get<RowsDims>(c.dims);
  const int n = s.n, d = s.d;
  const size_t nd = size_t(n) * d;
  const std::vector<T> x = o.rnd(nd), g = o.rnd(size_t(d), 0.5, 1.5);
  const T *xd = o.dev(x), *gd = o.dev(g);
  T* out = o.dev(std::vector<T>(nd));
  Acc* rstd = o.dev(std::vector<Acc>(size_t(n)));
  if (c.kernel == Kernel::rmsnorm_forward) {
    auto call = [&] { o.be->rmsnorm_forward(out, rstd, xd, gd, n, d, s.eps); };
    if (o.timed(0, 2.0 * nd * sizeof(T) + d * sizeof(T) + n * sizeof(Acc), call)) return;
    call();
    Vec ref_rstd;
    const Vec expected = ref_rmsnorm(to_double(x), to_double(g), n, d, double(Acc(s.eps)), &ref_rstd);
    expect_close(o.host(out, nd), expected, c.bound("out").tol<T>(), "rmsnorm out");
    expect_close(o.host(rstd, size_t(n)), ref_rstd, c.bound("rstd").tol<T>(), "rmsnorm rstd");
    return;
  }
  const std::vector<T> dout = o.rnd(nd), dx = o.rnd(nd);
  const std::vector<Acc> dg = o.template rnd<Acc>(size_t(d));
  o.be->rmsnorm_forward(out, rstd, xd, gd, n, d, s.eps);
  T* dxd = o.dev(dx);
  Acc* dgd = o.dev(dg);
  const T* doutd = o.dev(dout);
  auto call = [&] { o.be->rmsnorm_backward(dxd, dgd, doutd, xd, gd, rstd, n, d); };
  if (o.timed(0, 4.0 * nd * sizeof(T) + d * (sizeof(T) + 2 * sizeof(Acc)) + n * sizeof(Acc), call)) return;
  call();
  const Vec x64 = to_double(x), g64 = to_double(g), w = to_double(dout);
  const double e = double(Acc(s.eps));
  const Vec fdx = fd_grad([&](const Vec& xx) { return dot(ref_rmsnorm(xx, g64, n, d, e), w); }, x64);
  const Vec fdg = fd_grad([&](const Vec& gg) { return dot(ref_rmsnorm(x64, gg, n, d, e), w); }, g64);
  expect_close(o.host(dxd, dx.size()), add(to_double(dx), fdx), c.bound("dx").tol<T>(), "rmsnorm dx");
  expect_close(o.host(dgd, dg.size()), add(to_double(dg), fdg), c.bound("dg").tol<T>(), "rmsnorm dg");
}

template <typename T>
void rope_case(Ops<T>& o, const Case& c) {
  const RopeDims& s = std::get<RopeDims>(c.dims);
  const int heads = s.heads, hd = s.hd;
  if (!s.positions.empty()) {
    // Generation's rows (RopeShape::position): row i turns as row pos[i] of
    // a sample would.
    const std::vector<int32_t>& pos = s.positions;
    const int n = int(pos.size()), width = heads * hd;
    const std::vector<T> x = o.rnd(size_t(n) * width);
    T* xd = o.dev(x);
    const RopeShape shape{n, 1, heads, hd, s.theta, s.interpolation, nullptr, o.dev(pos), s.max_positions};
    auto call = [&] { o.be->rope_forward(xd, shape); };
    if (o.timed(0, 2.0 * x.size() * sizeof(T), call)) return;
    call();
    Vec expected;
    for (int i = 0; i < n; ++i) {
      Vec sample(size_t(pos[size_t(i)] + 1) * width, 0.0);  // the row at position pos[i] of a sample
      std::copy(x.begin() + ptrdiff_t(i) * width, x.begin() + ptrdiff_t(i + 1) * width,
                sample.begin() + ptrdiff_t(pos[size_t(i)]) * width);
      const Vec turned = ref_rope(sample, 1, pos[size_t(i)] + 1, heads, hd, s.theta, s.interpolation);
      expected.insert(expected.end(), turned.end() - width, turned.end());
    }
    expect_close(o.host(xd, x.size()), expected, c.bound("x").tol<T>(), "rope at positions");
    return;
  }
  const int batch = s.batch, seq = s.seq;
  const size_t N = size_t(batch) * seq * heads * hd;
  const bool reset = !s.doc_start.empty();
  const RopeShape shape{batch, seq, heads, hd, s.theta, s.interpolation, reset ? o.dev(s.doc_start) : nullptr};
  if (c.kernel == Kernel::rope_backward) {
    const std::vector<T> x = o.rnd(N), y = o.rnd(N);
    T *rx = o.dev(x), *rty = o.dev(y);
    auto call = [&] { o.be->rope_backward(rty, shape); };
    if (o.timed(0, 2.0 * N * sizeof(T), call)) return;
    o.be->rope_forward(rx, shape);
    call();
    // dot(R x, y) == dot(x, R^T y).
    const Vec Rx = to_double(o.host(rx, N)), RTy = to_double(o.host(rty, N));
    const double lhs = dot(Rx, to_double(y)), rhs = dot(to_double(x), RTy);
    EXPECT_NEAR(lhs, rhs, c.bound("dot").tol<T>() * std::sqrt(double(N)) * (1 + std::abs(lhs)));
    // R is orthogonal, so backward(forward(x)) == x.
    o.be->rope_backward(rx, shape);
    expect_close(o.host(rx, N), to_double(x), c.bound("R^T R x").tol<T>(), "R^T R x");
    return;
  }
  const std::vector<T> x = o.rnd(N);
  T* xd = o.dev(x);
  auto call = [&] { o.be->rope_forward(xd, shape); };
  if (o.timed(0, 2.0 * N * sizeof(T), call)) return;
  call();
  const Vec expected =
      ref_rope(to_double(x), batch, seq, heads, hd, s.theta, s.interpolation, reset ? &s.doc_start : nullptr);
  const std::vector<T> y = o.host(xd, N);
  expect_close(y, expected, c.bound("x").tol<T>(), "rope");
  // Position 0 is left as it is: row 0 of every sample, and the rows where
  // documents start.
  for (int r = 0; r < batch * seq; ++r) {
    if (r % seq - (reset ? s.doc_start[size_t(r)] : 0) != 0) continue;
    for (int col = 0; col < heads * hd; ++col)
      EXPECT_EQ(y[size_t(r) * heads * hd + col], x[size_t(r) * heads * hd + col]) << "row " << r;
  }
}

// Products of the causal half of each head's S x S scores, hd deep: the
// forward's two (scores, then with v), the backward's five (scores again,
// dP, dV, dQ, dK).
double attention_flops(const AttentionDims& d, int products) {
  return 2.0 * products * d.B * d.H * d.hd * (double(d.S) * (d.S + 1) / 2);
}

template <typename T>
void attention_forward_case(Ops<T>& o, const Case& c) {
  using Acc = acc_t<T>;
  const AttentionDims& s = std::get<AttentionDims>(c.dims);
  const int B = s.B, S = s.S, H = s.H, G = s.G, hd = s.hd;
  const auto [q, k, v] = o.attention_inputs(B, S, H, G, hd);
  const std::vector<int32_t> starts = document_starts(B, S);
  AttentionShape shape = whole_heads(B, S, H, G, hd);
  if (s.documents) shape.doc_start = o.dev(starts);
  T* out = o.dev(std::vector<T>(q.size(), T(-7)));  // garbage in
  Acc* lse = o.dev(std::vector<Acc>(size_t(B) * H * S, Acc(-7)));
  const T *qd = o.dev(q), *kd = o.dev(k), *vd = o.dev(v);
  auto call = [&] { o.be->attention_forward(out, lse, qd, kd, vd, shape); };
  if (o.timed(attention_flops(s, 2), 0, call)) return;
  call();
  const RefAttention expected =
      ref_attention_of(to_double(q), to_double(k), to_double(v), B, S, H, G, hd, s.documents ? &starts : nullptr);
  expect_close(o.host(out, q.size()), expected.out, c.bound("out").tol<T>(), "attention out");
  expect_close(o.host(lse, expected.lse.size()), expected.lse, c.bound("lse").tol<T>(), "attention log-sum-exp");
}

// Against central differences of the reference (finite-difference bounds),
// or against the gradients of the reference's own probabilities, each
// element within the rounding of its terms (RefAttentionGrads).
template <typename T>
void attention_backward_case(Ops<T>& o, const Case& c) {
  const AttentionDims& s = std::get<AttentionDims>(c.dims);
  const int B = s.B, S = s.S, H = s.H, G = s.G, hd = s.hd;
  const bool fd = c.bound("dq").kind == Bound::kFiniteDifferences;
  const auto a = o.attention_run(s);
  const auto& [q, k, v] = a.inputs;
  const std::vector<int32_t>* starts = s.documents ? &a.starts : nullptr;
  const std::vector<T> dout = o.rnd(q.size());
  // Finite differences check accumulation too: they start from gradients.
  const std::vector<T> dq = fd ? o.rnd(q.size()) : std::vector<T>(q.size()),
                       dk = fd ? o.rnd(k.size()) : std::vector<T>(k.size()),
                       dv = fd ? o.rnd(v.size()) : std::vector<T>(v.size());
  T *dqd = o.dev(dq), *dkd = o.dev(dk), *dvd = o.dev(dv);
  const T* doutd = o.dev(dout);
  auto call = [&] { o.be->attention_backward(dqd, dkd, dvd, doutd, a.out, a.lse, a.q, a.k, a.v, a.shape); };
  if (o.timed(attention_flops(s, 5), 0, call)) return;
  call();
  const Vec q64 = to_double(q), k64 = to_double(k), v64 = to_double(v);
  if (fd) {
    const Vec w = to_double(dout);
    auto f = [&](const Vec& qq, const Vec& kk, const Vec& vv) {
      return dot(ref_attention(qq, kk, vv, B, S, H, G, hd, starts), w);
    };
    expect_close(o.host(dqd, q.size()), add(to_double(dq), fd_grad([&](const Vec& x) { return f(x, k64, v64); }, q64)),
                 c.bound("dq").tol<T>(), "dq");
    expect_close(o.host(dkd, k.size()), add(to_double(dk), fd_grad([&](const Vec& x) { return f(q64, x, v64); }, k64)),
                 c.bound("dk").tol<T>(), "dk");
    expect_close(o.host(dvd, v.size()), add(to_double(dv), fd_grad([&](const Vec& x) { return f(q64, k64, x); }, v64)),
                 c.bound("dv").tol<T>(), "dv");
    return;
  }
  const RefAttention f = ref_attention_of(q64, k64, v64, B, S, H, G, hd, starts);
  const RefAttentionGrads r = ref_attention_backward(f, q64, k64, v64, to_double(dout), B, S, H, G, hd);
  expect_close(o.host(dqd, q.size()), r.dq, c.bound("dq").tol<T>(), "dq", &r.dq_size);
  expect_close(o.host(dkd, k.size()), r.dk, c.bound("dk").tol<T>(), "dk", &r.dk_size);
  expect_close(o.host(dvd, v.size()), r.dv, c.bound("dv").tol<T>(), "dv", &r.dv_size);
}

// A tensor-parallel rank's heads: query heads [first_head, first_head + Hl)
// with their kv heads either split (G >= TP) or all present (G < TP) give the
// outputs and gradients of those heads of the whole attention (the kv
// gradients summed over the ranks).
template <typename T>
void attention_head_slice_case(Ops<T>& o, const Case& c) {
  using Acc = acc_t<T>;
  const AttentionDims& s = std::get<AttentionDims>(c.dims);
  const int B = s.B, S = s.S, H = s.H, G = s.G, hd = s.hd, tp = 2;
  const double tol = c.bound("slice").tol<T>();
  const auto [q, k, v] = o.attention_inputs(B, S, H, G, hd);
  const std::vector<T> dout = o.rnd(q.size());
  T* out = o.dev(std::vector<T>(q.size()));
  Acc* lse = o.dev(std::vector<Acc>(size_t(B) * H * S));
  T *dq = o.dev(std::vector<T>(q.size())), *dk = o.dev(std::vector<T>(k.size())), *dv = o.dev(std::vector<T>(v.size()));
  T *qd = o.dev(q), *kd = o.dev(k), *vd = o.dev(v);
  o.be->attention_forward(out, lse, qd, kd, vd, whole_heads(B, S, H, G, hd));
  o.be->attention_backward(dq, dk, dv, o.dev(dout), out, lse, qd, kd, vd, whole_heads(B, S, H, G, hd));
  const Vec whole_out = to_double(o.host(out, q.size())), whole_dq = to_double(o.host(dq, q.size()));
  const Vec whole_dk = to_double(o.host(dk, k.size())), whole_dv = to_double(o.host(dv, v.size()));
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
    T *qld = o.dev(ql), *kld = o.dev(cols(k, G * hd, kv0, Gl * hd)), *vld = o.dev(cols(v, G * hd, kv0, Gl * hd));
    T* ol = o.dev(std::vector<T>(ql.size()));
    Acc* lsel = o.dev(std::vector<Acc>(size_t(B) * Hl * S));
    T *dql = o.dev(std::vector<T>(ql.size())), *dkl = o.dev(std::vector<T>(size_t(B) * S * Gl * hd)),
      *dvl = o.dev(std::vector<T>(size_t(B) * S * Gl * hd));
    o.be->attention_forward(ol, lsel, qld, kld, vld, a);
    o.be->attention_backward(dql, dkl, dvl, o.dev(cols(dout, H * hd, r * Hl * hd, Hl * hd)), ol, lsel, qld, kld, vld, a);
    expect_close(o.host(ol, ql.size()), cols(whole_out, H * hd, r * Hl * hd, Hl * hd), tol, "slice out");
    expect_close(o.host(dql, ql.size()), cols(whole_dq, H * hd, r * Hl * hd, Hl * hd), tol, "slice dq");
    const std::vector<T> dk_part = o.host(dkl, size_t(B) * S * Gl * hd), dv_part = o.host(dvl, size_t(B) * S * Gl * hd);
    for (size_t row = 0; row < size_t(B) * S; ++row)
      for (int col = 0; col < Gl * hd; ++col) {
        dk_sum[row * G * hd + kv0 + col] += double(dk_part[row * Gl * hd + col]);
        dv_sum[row * G * hd + kv0 + col] += double(dv_part[row * Gl * hd + col]);
      }
  }
  expect_close(dk_sum, whole_dk, tol, "dk summed over the slices");
  expect_close(dv_sum, whole_dv, tol, "dv summed over the slices");
}

// The positions of CP rank r's rows of a sample of S tokens: chunks r and
// 2 cp - 1 - r of S / (2 cp) tokens (parallel/ring_attention.h).
std::vector<int32_t> chunk_positions(int r, int cp, int S) {
  const int c = S / (2 * cp);
  std::vector<int32_t> pos;
  for (int chunk : {r, 2 * cp - 1 - r})
    for (int i = 0; i < c; ++i) pos.push_back(int32_t(chunk * c + i));
  return pos;
}

// Rows `pos` of every sample of x [B*S, width], as [B*pos.size(), width].
template <typename E>
std::vector<E> sample_rows(const std::vector<E>& x, int B, int S, int width, const std::vector<int32_t>& pos) {
  std::vector<E> y;
  for (int b = 0; b < B; ++b)
    for (int32_t p : pos)
      y.insert(y.end(), x.begin() + (ptrdiff_t(b) * S + p) * width, x.begin() + (ptrdiff_t(b) * S + p + 1) * width);
  return y;
}

// The block form as the ring runs it, all in one process: for each CP rank
// r and each rank j, r's queries against j's keys and values. Forward: each
// block's out and lse against the reference over those rows (a row that
// sees none of j's keys: 0 and -inf). Backward: with the whole sequence's
// out and lse (the reference's, rounded as the kernel would store them),
// r's dq summed over the cp blocks, and the dk, dv of block j, against the
// reference gradients of a loss that only r's rows feed (dO zero on the
// other rows), so that j's dk, dv are r's share alone.
template <typename T>
void attention_blocks_case(Ops<T>& o, const Case& c) {
  using Acc = acc_t<T>;
  const RingDims& s = std::get<RingDims>(c.dims);
  const int B = s.B, S = s.S, H = s.H, G = s.G, hd = s.hd, cp = s.cp, rows = S / cp, qs = H * hd, ks = G * hd;
  const auto [q, k, v] = o.attention_inputs(B, S, H, G, hd);
  const std::vector<int32_t> starts = document_starts(B, S);
  const Vec q64 = to_double(q), k64 = to_double(k), v64 = to_double(v);
  const RefAttention whole = ref_attention_of(q64, k64, v64, B, S, H, G, hd, s.documents ? &starts : nullptr);
  for (int r = 0; r < cp; ++r) {
    SCOPED_TRACE(cat("queries of CP rank ", r, " of ", cp));
    const std::vector<int32_t> qpos = chunk_positions(r, cp, S);
    const std::vector<T> qr = sample_rows(q, B, S, qs, qpos);
    const std::vector<int32_t> starts_r = sample_rows(starts, B, S, 1, qpos);
    AttentionShape a = whole_heads(B, rows, H, G, hd);
    a.kv_seq = rows;
    a.q_pos = o.dev(qpos);
    if (s.documents) a.doc_start = o.dev(starts_r);
    const T* qd = o.dev(qr);
    // The whole sequence's out and lse of r's rows, as stored; dO on them.
    std::vector<T> out_r;
    for (double x : sample_rows(whole.out, B, S, qs, qpos)) out_r.push_back(T(x));
    std::vector<Acc> lse_r;
    for (int b = 0; b < B; ++b)
      for (int h = 0; h < H; ++h)
        for (int32_t p : qpos) lse_r.push_back(Acc(whole.lse[(size_t(b) * H + h) * S + p]));
    const std::vector<T> dout_r = o.rnd(qr.size());
    Vec dout(q.size(), 0.0);
    for (int b = 0; b < B; ++b)
      for (int i = 0; i < rows; ++i)
        for (int e = 0; e < qs; ++e)
          dout[(size_t(b) * S + qpos[size_t(i)]) * qs + e] = double(dout_r[(size_t(b) * rows + i) * qs + e]);
    const RefAttentionGrads grads = ref_attention_backward(whole, q64, k64, v64, dout, B, S, H, G, hd);
    const T *out_rd = o.dev(out_r), *dout_rd = o.dev(dout_r);
    const Acc* lse_rd = o.dev(lse_r);
    T* dq = o.dev(std::vector<T>(qr.size()));
    for (int j = 0; j < cp; ++j) {
      SCOPED_TRACE(cat("keys of CP rank ", j));
      const std::vector<int32_t> kpos = chunk_positions(j, cp, S);
      const std::vector<T> kj = sample_rows(k, B, S, ks, kpos), vj = sample_rows(v, B, S, ks, kpos);
      a.k_pos = o.dev(kpos);
      const T *kd = o.dev(kj), *vd = o.dev(vj);
      T* out = o.dev(std::vector<T>(qr.size(), T(-7)));  // garbage in
      Acc* lse = o.dev(std::vector<Acc>(size_t(B) * H * rows, Acc(-7)));
      o.be->attention_forward(out, lse, qd, kd, vd, a);
      const RefAttention block = ref_attention_of(to_double(qr), to_double(kj), to_double(vj), B, rows, H, G, hd,
                                                  s.documents ? &starts_r : nullptr, &qpos, &kpos);
      expect_close(o.host(out, qr.size()), block.out, c.bound("out").tol<T>(), "block out");
      expect_close(o.host(lse, block.lse.size()), block.lse, c.bound("lse").tol<T>(), "block log-sum-exp");
      T *dk = o.dev(std::vector<T>(kj.size())), *dv = o.dev(std::vector<T>(vj.size()));
      o.be->attention_backward(dq, dk, dv, dout_rd, out_rd, lse_rd, qd, kd, vd, a);
      const Vec dk_size = sample_rows(grads.dk_size, B, S, ks, kpos), dv_size = sample_rows(grads.dv_size, B, S, ks, kpos);
      expect_close(o.host(dk, kj.size()), sample_rows(grads.dk, B, S, ks, kpos), c.bound("dk").tol<T>(), "block dk",
                   &dk_size);
      expect_close(o.host(dv, vj.size()), sample_rows(grads.dv, B, S, ks, kpos), c.bound("dv").tol<T>(), "block dv",
                   &dv_size);
    }
    const Vec dq_size = sample_rows(grads.dq_size, B, S, qs, qpos);
    expect_close(o.host(dq, qr.size()), sample_rows(grads.dq, B, S, qs, qpos), c.bound("dq").tol<T>(),
                 "dq summed over the blocks", &dq_size);
  }
}

// Running results merged with a block's: rows where either side or both
// have seen nothing (lse -inf) among rows with both sides finite.
template <typename T>
void attention_merge_case(Ops<T>& o, const Case& c) {
  using Acc = acc_t<T>;
  const MergeDims& s = std::get<MergeDims>(c.dims);
  const int B = s.B, S = s.S, H = s.H, hd = s.hd;
  const size_t n = size_t(B) * S * H * hd, rows = size_t(B) * H * S;
  const std::vector<Acc> out = o.template rnd<Acc>(n);
  std::vector<Acc> lse = o.template rnd<Acc>(rows, -4, 4);
  const std::vector<T> out_b = o.rnd(n);
  std::vector<Acc> lse_b = o.template rnd<Acc>(rows, -4, 4);
  const Acc minus_inf = -std::numeric_limits<Acc>::infinity();
  for (size_t i = 0; i < rows; ++i) {
    if (i % 4 == 1 || i % 7 == 0) lse[i] = minus_inf;
    if (i % 5 == 2 || i % 7 == 0) lse_b[i] = minus_inf;
  }
  Acc *outd = o.dev(out), *lsed = o.dev(lse);
  AttentionShape a = whole_heads(B, S, H, 1, hd);
  o.be->attention_merge(outd, lsed, o.dev(out_b), o.dev(lse_b), a);
  Vec expected_out(n), expected_lse(rows);
  for (int b = 0; b < B; ++b)
    for (int i = 0; i < S; ++i)
      for (int h = 0; h < H; ++h) {
        const size_t at = (size_t(b) * H + h) * S + i, o0 = ((size_t(b) * S + i) * H + h) * hd;
        const double l = double(lse[at]), lb = double(lse_b[at]);
        const double merged = std::log(std::exp(l) + std::exp(lb));  // -inf when both are
        expected_lse[at] = merged;
        for (int e = 0; e < hd; ++e)
          expected_out[o0 + e] = std::isinf(merged) ? double(out[o0 + e])
                                                    : (std::isinf(l) ? 0.0 : double(out[o0 + e]) * std::exp(l - merged)) +
                                                          (std::isinf(lb) ? 0.0 : double(out_b[o0 + e]) * std::exp(lb - merged));
      }
  expect_close(o.host(outd, n), expected_out, c.bound("out").tol<T>(), "merged out");
  expect_close(o.host(lsed, rows), expected_lse, c.bound("lse").tol<T>(), "merged log-sum-exp");
}

// Sequences of a cache (one of length 0 unused, its slots full of a value
// that would show if read), written in two steps as generation does: a
// prompt's rows (the first 40 of sequence 0, the first 4 of sequence 2),
// then the rest. Each row attends to its own sequence's positions up to its
// own: the rows of causal attention over the whole sequence.
template <typename T>
void attention_decode_case(Ops<T>& o, const Case& c) {
  const CacheDims& s = std::get<CacheDims>(c.dims);
  const int H = s.H, G = s.G, hd = s.hd, positions = s.positions;
  const std::vector<int>& length = s.lengths;
  const int sequences = int(length.size());
  const KvCacheShape cache{sequences, G, positions, hd};
  const size_t cache_size = size_t(sequences) * G * positions * hd;
  T* k_cache = o.dev(std::vector<T>(cache_size, T(50)));
  T* v_cache = o.dev(std::vector<T>(cache_size, T(50)));
  std::vector<typename Ops<T>::Qkv> inputs;
  for (int len : length) inputs.push_back(o.attention_inputs(1, len, H, G, hd));
  for (int step = 0; step < 2; ++step) {
    std::vector<int32_t> seq, pos;
    std::vector<T> q, k, v;
    for (int sq : {2, 0}) {
      const int split = sq == 0 ? 40 : 4, from = step == 0 ? 0 : split, to = step == 0 ? split : length[size_t(sq)];
      for (int p = from; p < to; ++p) {
        seq.push_back(sq);
        pos.push_back(p);
        // Appends position p's row of x (rows of `width`) to `to`.
        const auto append_row = [p](std::vector<T>& into, const std::vector<T>& x, int width) {
          into.insert(into.end(), x.begin() + ptrdiff_t(p) * width, x.begin() + ptrdiff_t(p + 1) * width);
        };
        append_row(q, inputs[size_t(sq)].q, H * hd);
        append_row(k, inputs[size_t(sq)].k, G * hd);
        append_row(v, inputs[size_t(sq)].v, G * hd);
      }
    }
    const int n = int(seq.size());
    const AttentionShape a = whole_heads(1, 1, H, G, hd);
    int32_t *seq_d = o.dev(seq), *pos_d = o.dev(pos);
    o.be->kv_cache_store(k_cache, o.dev(k), seq_d, pos_d, n, cache);
    o.be->kv_cache_store(v_cache, o.dev(v), seq_d, pos_d, n, cache);
    T* out = o.dev(std::vector<T>(q.size(), T(-7)));
    o.be->attention_decode(out, o.dev(q), k_cache, v_cache, seq_d, pos_d, n, a, cache);
    const std::vector<T> got = o.host(out, q.size()), stored = o.host(k_cache, cache_size);
    for (int i = 0; i < n; ++i) {
      const int sq = seq[size_t(i)], p = pos[size_t(i)];
      for (int g = 0; g < G; ++g)
        for (int col = 0; col < hd; ++col)
          ASSERT_EQ(stored[((size_t(sq) * G + g) * positions + p) * hd + col], k[(size_t(i) * G + g) * hd + col])
              << "stored key of row " << i;
      const Vec whole = ref_attention(to_double(inputs[size_t(sq)].q), to_double(inputs[size_t(sq)].k),
                                      to_double(inputs[size_t(sq)].v), 1, length[size_t(sq)], H, G, hd);
      const Vec expected(whole.begin() + ptrdiff_t(p) * H * hd, whole.begin() + ptrdiff_t(p + 1) * H * hd);
      const std::vector<T> row(got.begin() + ptrdiff_t(i) * H * hd, got.begin() + ptrdiff_t(i + 1) * H * hd);
      expect_close(row, expected, c.bound("out").tol<T>(),
                   "decode attention of sequence " + std::to_string(sq) + " position " + std::to_string(p));
    }
  }
}

template <typename T>
void gelu_case(Ops<T>& o, const Case& c) {
  const size_t n = std::get<VectorDims>(c.dims).n;
  std::vector<T> x(n);  // evenly over [-4, 4]
  for (size_t i = 0; i < n; ++i) x[i] = T(-4.0 + 8.0 * double(i) / double(n - 1) + 0.01);
  const T* xd = o.dev(x);
  if (c.kernel == Kernel::gelu_forward) {
    T* out = o.dev(std::vector<T>(n));
    auto call = [&] { o.be->gelu_forward(out, xd, n); };
    if (o.timed(0, 2.0 * n * sizeof(T), call)) return;
    call();
    Vec expected(n);
    for (size_t i = 0; i < n; ++i) expected[i] = ref_gelu(double(x[i]));
    expect_close(o.host(out, n), expected, c.bound("out").tol<T>(), "gelu");
    return;
  }
  // din is written, not accumulated: what it held before must not show.
  const std::vector<T> dout = o.rnd(n);
  const T* doutd = o.dev(dout);
  T* dind = o.dev(o.rnd(n));
  auto call = [&] { o.be->gelu_backward(dind, doutd, xd, n); };
  if (o.timed(0, 3.0 * n * sizeof(T), call)) return;
  call();
  Vec fd(n);
  for (size_t i = 0; i < n; ++i) {
    const double h = 1e-6, xi = double(x[i]);
    fd[i] = double(dout[i]) * (ref_gelu(xi + h) - ref_gelu(xi - h)) / (2 * h);
  }
  expect_close(o.host(dind, n), fd, c.bound("din").tol<T>(), "gelu backward");
}

double ref_sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }
double ref_silu(double x) { return x * ref_sigmoid(x); }

// swiglu: gate evenly over [-6, 6], up random; sigmoid: x evenly over [-6, 6].
template <typename T>
void swiglu_case(Ops<T>& o, const Case& c) {
  const size_t n = std::get<VectorDims>(c.dims).n;
  std::vector<T> gate(n);
  for (size_t i = 0; i < n; ++i) gate[i] = T(-6.0 + 12.0 * double(i) / double(n - 1) + 0.01);
  const std::vector<T> up = o.rnd(n);
  const T *gated = o.dev(gate), *upd = o.dev(up);
  if (c.kernel == Kernel::swiglu_forward) {
    T* out = o.dev(std::vector<T>(n));
    auto call = [&] { o.be->swiglu_forward(out, gated, upd, n); };
    if (o.timed(0, 3.0 * n * sizeof(T), call)) return;
    call();
    Vec expected(n);
    for (size_t i = 0; i < n; ++i) expected[i] = ref_silu(double(gate[i])) * double(up[i]);
    expect_close(o.host(out, n), expected, c.bound("out").tol<T>(), "swiglu");
    return;
  }
  // Both gradients are written, not accumulated.
  const std::vector<T> dout = o.rnd(n);
  const T* doutd = o.dev(dout);
  T *dgate = o.dev(o.rnd(n)), *dup = o.dev(o.rnd(n));
  auto call = [&] { o.be->swiglu_backward(dgate, dup, doutd, gated, upd, n); };
  if (o.timed(0, 5.0 * n * sizeof(T), call)) return;
  call();
  Vec fd_gate(n), fd_up(n);
  for (size_t i = 0; i < n; ++i) {
    const double h = 1e-6, a = double(gate[i]), b = double(up[i]);
    fd_gate[i] = double(dout[i]) * b * (ref_silu(a + h) - ref_silu(a - h)) / (2 * h);
    fd_up[i] = double(dout[i]) * (ref_silu(a) * (b + h) - ref_silu(a) * (b - h)) / (2 * h);
  }
  expect_close(o.host(dgate, n), fd_gate, c.bound("dgate").tol<T>(), "swiglu backward, gate");
  expect_close(o.host(dup, n), fd_up, c.bound("dup").tol<T>(), "swiglu backward, up");
}

template <typename T>
void sigmoid_case(Ops<T>& o, const Case& c) {
  const size_t n = std::get<VectorDims>(c.dims).n;
  std::vector<T> x(n);
  for (size_t i = 0; i < n; ++i) x[i] = T(-6.0 + 12.0 * double(i) / double(n - 1) + 0.01);
  T* y = o.dev(std::vector<T>(n));
  auto forward = [&] { o.be->sigmoid_forward(y, o.dev(x), n); };
  if (c.kernel == Kernel::sigmoid_forward) {
    const T* xd = o.dev(x);
    auto call = [&] { o.be->sigmoid_forward(y, xd, n); };
    if (o.timed(0, 2.0 * n * sizeof(T), call)) return;
    call();
    Vec expected(n);
    for (size_t i = 0; i < n; ++i) expected[i] = ref_sigmoid(double(x[i]));
    expect_close(o.host(y, n), expected, c.bound("y").tol<T>(), "sigmoid");
    return;
  }
  forward();
  // The derivative from y as the kernel stored it, against central
  // differences of the reference at x; dx is written, not accumulated.
  const std::vector<T> dy = o.rnd(n);
  const T* dyd = o.dev(dy);
  T* dx = o.dev(o.rnd(n));
  auto call = [&] { o.be->sigmoid_backward(dx, dyd, y, n); };
  if (o.timed(0, 3.0 * n * sizeof(T), call)) return;
  call();
  Vec fd(n);
  for (size_t i = 0; i < n; ++i) {
    const double h = 1e-6, xi = double(x[i]);
    fd[i] = double(dy[i]) * (ref_sigmoid(xi + h) - ref_sigmoid(xi - h)) / (2 * h);
  }
  expect_close(o.host(dx, n), fd, c.bound("dx").tol<T>(), "sigmoid backward");
}

template <typename T>
void softmax_case(Ops<T>& o, const Case& c) {
  const RowsDims& s = std::get<RowsDims>(c.dims);
  const int n = s.n, cols = s.d;
  const size_t size = size_t(n) * cols;
  T* p = o.dev(std::vector<T>(size));
  if (c.kernel == Kernel::softmax_forward) {
    std::vector<T> x = o.rnd(size, -3, 3);
    for (int j = 0; j < cols; ++j) x[size_t(4) * cols + j] += T(300);  // a shifted row: needs the max subtracted
    const T* xd = o.dev(x);
    auto call = [&] { o.be->softmax_forward(p, xd, n, cols); };
    if (o.timed(0, 2.0 * size * sizeof(T), call)) return;
    call();
    expect_close(o.host(p, size), ref_softmax(to_double(x), n, cols), c.bound("p").tol<T>(), "softmax");
    return;
  }
  // Backward on an unshifted input, so that finite differences stay accurate.
  const std::vector<T> x2 = o.rnd(size, -3, 3);
  o.be->softmax_forward(p, o.dev(x2), n, cols);
  const std::vector<T> dp = o.rnd(size), dx = o.rnd(size);
  T* dxd = o.dev(dx);
  const T* dpd = o.dev(dp);
  auto call = [&] { o.be->softmax_backward(dxd, dpd, p, n, cols); };
  if (o.timed(0, 4.0 * size * sizeof(T), call)) return;
  call();
  const Vec w = to_double(dp);
  const Vec fd = fd_grad([&](const Vec& xx) { return dot(ref_softmax(xx, n, cols), w); }, to_double(x2));
  expect_close(o.host(dxd, size), add(to_double(dx), fd), c.bound("dx").tol<T>(), "softmax backward");
}

// Logits, statistics and losses are Acc: row_max and ce_partials run on
// be.acc(), ce_finish on be, writing dlogits in T.
template <typename T>
void cross_entropy_case(Ops<T>& o, const Case& c) {
  using Acc = acc_t<T>;
  const CrossEntropyDims& s = std::get<CrossEntropyDims>(c.dims);
  auto& be = *o.be;
  auto& acc = be.acc();
  const std::vector<int32_t>& targets = s.targets;
  const int n = int(targets.size()), v = s.v;
  const size_t nv = size_t(n) * v;
  std::vector<Acc> logits = o.template rnd<Acc>(nv, -3, 3);
  for (int j = 0; j < v; ++j) logits[size_t(2) * v + j] += Acc(500);  // needs the max subtracted
  const int32_t* tgt = o.dev(targets);
  const double dscale = 0.25;
  // The whole vocabulary in one slice: row_max, ce_partials, ce_finish.
  const Acc* lg = o.dev(logits);
  Acc *m = o.dev(std::vector<Acc>(size_t(n))), *p = o.dev(std::vector<Acc>(size_t(2) * n));
  auto cross_entropy = [&](Acc* losses, T* dlogits) {
    acc.row_max(m, lg, n, v);
    acc.ce_partials(p, lg, m, tgt, n, v, 0);
    be.ce_finish(losses, dlogits, lg, m, p, tgt, n, v, 0, dscale);
  };
  Acc* losses = o.dev(std::vector<Acc>(size_t(n), Acc(-1)));
  T* dlogits = o.dev(o.rnd(nv));  // dlogits is overwritten
  if (o.timed(0, nv * (3.0 * sizeof(Acc) + sizeof(T)) + n * (8.0 + 8.0 * sizeof(Acc)),
              [&] { cross_entropy(losses, dlogits); }))
    return;
  cross_entropy(losses, dlogits);
  Vec ref_loss(static_cast<size_t>(n)), ref_dl(nv);
  for (int i = 0; i < n; ++i) {
    double mx = -1e300;
    for (int j = 0; j < v; ++j) mx = std::max(mx, double(logits[size_t(i) * v + j]));
    double sum = 0.0;
    for (int j = 0; j < v; ++j) sum += std::exp(double(logits[size_t(i) * v + j]) - mx);
    const double lse = mx + std::log(sum);
    ref_loss[size_t(i)] = lse - double(logits[size_t(i) * v + targets[size_t(i)]]);
    for (int j = 0; j < v; ++j)
      ref_dl[size_t(i) * v + j] = (std::exp(double(logits[size_t(i) * v + j]) - lse) - (j == targets[size_t(i)])) * dscale;
  }
  const double loss_tol = c.bound("losses").tol<T>(), dlogits_tol = c.bound("dlogits").tol<T>();
  expect_close(o.host(losses, size_t(n)), ref_loss, loss_tol, "losses");
  expect_close(o.host(dlogits, nv), ref_dl, dlogits_tol, "dlogits");

  Acc* losses2 = o.dev(std::vector<Acc>(size_t(n), Acc(-1)));
  cross_entropy(losses2, nullptr);
  expect_close(o.host(losses2, size_t(n)), ref_loss, loss_tol, "losses without dlogits");

  // Two vocabulary slices [0, cut) and [cut, v), reduced by hand as the TP
  // group would (max, then sums): the same losses, and each slice's dlogits.
  const int cut = s.cut, widths[2] = {cut, v - cut};
  std::vector<std::vector<Acc>> parts(2);
  std::vector<Acc> mx(size_t(n), -std::numeric_limits<Acc>::infinity()), sums(size_t(2) * n, Acc(0));
  for (int r = 0; r < 2; ++r) {
    for (int i = 0; i < n; ++i)
      for (int j = 0; j < widths[r]; ++j) parts[size_t(r)].push_back(logits[size_t(i) * v + r * cut + j]);
    Acc* mr_d = o.dev(std::vector<Acc>(size_t(n)));
    acc.row_max(mr_d, o.dev(parts[size_t(r)]), n, widths[r]);
    const std::vector<Acc> mr = o.host(mr_d, size_t(n));
    for (int i = 0; i < n; ++i) mx[size_t(i)] = std::max(mx[size_t(i)], mr[size_t(i)]);
  }
  const Acc* mxd = o.dev(mx);
  for (int r = 0; r < 2; ++r) {
    Acc* pr_d = o.dev(std::vector<Acc>(size_t(2) * n));
    acc.ce_partials(pr_d, o.dev(parts[size_t(r)]), mxd, tgt, n, widths[r], r * cut);
    const std::vector<Acc> pr = o.host(pr_d, size_t(2) * n);
    for (int i = 0; i < 2 * n; ++i) sums[size_t(i)] += pr[size_t(i)];
  }
  const Acc* sumsd = o.dev(sums);
  for (int r = 0; r < 2; ++r) {
    Acc* l = o.dev(std::vector<Acc>(size_t(n)));
    T* dl = o.dev(std::vector<T>(size_t(n) * widths[r]));
    be.ce_finish(l, dl, o.dev(parts[size_t(r)]), mxd, sumsd, tgt, n, widths[r], r * cut, dscale);
    expect_close(o.host(l, size_t(n)), ref_loss, loss_tol, "losses over two slices");
    Vec ref_part;
    for (int i = 0; i < n; ++i)
      for (int j = 0; j < widths[r]; ++j) ref_part.push_back(ref_dl[size_t(i) * v + r * cut + j]);
    expect_close(o.host(dl, size_t(n) * widths[r]), ref_part, dlogits_tol, "dlogits of a slice");
  }
}

// gather_rows: dst[i] = src[idx[i]]; scatter_add_rows: dst[idx[i]] +=
// weight[i] * src[i], weight null meaning 1.
template <typename T>
void index_case(Ops<T>& o, const Case& c) {
  using Acc = acc_t<T>;
  const IndexDims& s = std::get<IndexDims>(c.dims);
  const int rows = s.rows, d = s.d, m = int(s.index.size());
  const std::vector<int32_t>& idx = s.index;
  const int32_t* idx_d = o.dev(idx);
  if (c.kernel == Kernel::gather_rows) {
    const std::vector<T> src = o.rnd(size_t(rows) * d);
    const T* src_d = o.dev(src);
    T* dst = o.dev(std::vector<T>(size_t(m) * d, T(-3)));
    auto call = [&] { o.be->gather_rows(dst, src_d, idx_d, m, d); };
    if (o.timed(0, 2.0 * m * d * sizeof(T) + 4.0 * m, call)) return;
    call();
    std::vector<T> expected;
    for (int i = 0; i < m; ++i)
      expected.insert(expected.end(), src.begin() + ptrdiff_t(idx[size_t(i)]) * d,
                      src.begin() + ptrdiff_t(idx[size_t(i)] + 1) * d);
    expect_equal(o.host(dst, size_t(m) * d), expected, "gather_rows");
    return;
  }
  const std::vector<T> part = o.rnd(size_t(m) * d), acc = o.rnd(size_t(rows) * d);
  const std::vector<Acc> w = o.template rnd<Acc>(size_t(m), 0.1, 2.0);
  const T* part_d = o.dev(part);
  const Acc* w_d = s.weighted ? o.dev(w) : nullptr;
  T* accd = o.dev(acc);
  auto call = [&] { o.be->scatter_add_rows(accd, part_d, idx_d, w_d, m, d); };
  if (o.timed(0, 3.0 * m * d * sizeof(T) + m * (4.0 + sizeof(Acc)), call)) return;
  call();
  Vec expected = to_double(acc);
  for (int i = 0; i < m; ++i)
    for (int j = 0; j < d; ++j)
      expected[size_t(idx[size_t(i)]) * d + j] += (s.weighted ? double(w[size_t(i)]) : 1.0) * double(part[size_t(i) * d + j]);
  expect_close(o.host(accd, acc.size()), expected, c.bound("dst").tol<T>(),
               s.weighted ? "scatter_add_rows weighted" : "scatter_add_rows");
}

// scale_rows: x[i] *= w[i]; row_dot: out[i] = dot(a[i], b[i]).
template <typename T>
void row_case(Ops<T>& o, const Case& c) {
  using Acc = acc_t<T>;
  const RowsDims& s = std::get<RowsDims>(c.dims);
  const int m = s.n, d = s.d;
  const size_t md = size_t(m) * d;
  if (c.kernel == Kernel::scale_rows) {
    const std::vector<Acc> w = o.template rnd<Acc>(size_t(m), 0.1, 2.0);
    std::vector<Acc> inverse(w.size());
    for (size_t i = 0; i < w.size(); ++i) inverse[i] = Acc(1 / double(w[i]));
    const std::vector<T> x = o.rnd(md);
    T* xd = o.dev(x);
    const Acc *wd = o.dev(w), *inv = o.dev(inverse);
    // Timed as x *= w, x *= 1 / w: repeated, x would underflow.
    auto pair = [&] {
      o.be->scale_rows(xd, wd, m, d);
      o.be->scale_rows(xd, inv, m, d);
    };
    if (o.timed(0, 2.0 * md * sizeof(T) + m * sizeof(Acc), pair, 2)) return;
    o.be->scale_rows(xd, wd, m, d);
    Vec expected(md);
    for (int i = 0; i < m; ++i)
      for (int j = 0; j < d; ++j) expected[size_t(i) * d + j] = double(x[size_t(i) * d + j]) * double(w[size_t(i)]);
    expect_close(o.host(xd, md), expected, c.bound("x").tol<T>(), "scale_rows");
    return;
  }
  const std::vector<T> a = o.rnd(md), b = o.rnd(md);
  const T *ad = o.dev(a), *bd = o.dev(b);
  Acc* out = o.dev(std::vector<Acc>(size_t(m), Acc(-5)));
  auto call = [&] { o.be->row_dot(out, ad, bd, m, d); };
  if (o.timed(0, 2.0 * md * sizeof(T) + m * sizeof(Acc), call)) return;
  call();
  Vec ref(size_t(m), 0.0);
  for (int i = 0; i < m; ++i)
    for (int j = 0; j < d; ++j) ref[size_t(i)] += double(a[size_t(i) * d + j]) * double(b[size_t(i) * d + j]);
  expect_close(o.host(out, size_t(m)), ref, c.bound("out").tol<T>(), "row_dot");
}

// PyTorch's AdamW formula over `steps` steps.
template <typename T>
void adamw_case(Ops<T>& o, const Case& c) {
  const AdamwDims& s = std::get<AdamwDims>(c.dims);
  const size_t n = s.n;
  const double lr = 1e-2, b1 = 0.9, b2 = 0.95, eps = s.eps, wd = s.weight_decay, clip_scale = s.grad_scale;
  const double gscale = eps > 1e-3 ? 0.05 : 1.0;
  const std::vector<T> p = o.rnd(n);
  T *pd = o.dev(p), *md = o.dev(std::vector<T>(n, T(0))), *vd = o.dev(std::vector<T>(n, T(0)));
  auto step_of = [&](int t) {
    return AdamWStep{lr, b1, b2, eps, wd, 1 - std::pow(b1, t), 1 - std::pow(b2, t), clip_scale};
  };
  const T* g1 = o.dev(o.rnd(n, -gscale, gscale));
  if (o.timed(0, 7.0 * n * sizeof(T), [&] { o.be->adamw(pd, g1, md, vd, n, step_of(1)); })) return;
  Vec pr = to_double(p), mr(n, 0.0), vr(n, 0.0);
  for (int t = 1; t <= s.steps; ++t) {
    const std::vector<T> g = o.rnd(n, -gscale, gscale);
    const AdamWStep st = step_of(t);
    for (size_t i = 0; i < n; ++i) {
      const double gi = double(g[i]) * clip_scale;
      pr[i] -= lr * wd * pr[i];
      mr[i] = b1 * mr[i] + (1 - b1) * gi;
      vr[i] = b2 * vr[i] + (1 - b2) * gi * gi;
      const double denom = std::sqrt(vr[i]) / std::sqrt(st.bc2) + eps;
      pr[i] -= lr / st.bc1 * mr[i] / denom;
    }
    o.be->adamw(pd, o.dev(g), md, vd, n, st);
    const double tol = t * c.bound("a step").tol<T>();
    expect_close(o.host(pd, n), pr, tol, "param step " + std::to_string(t));
    expect_close(o.host(md, n), mr, tol, "exp_avg step " + std::to_string(t));
    expect_close(o.host(vd, n), vr, tol, "exp_avg_sq step " + std::to_string(t));
  }
}

template <typename T>
void run_case(Ops<T>& o, const Case& c) {
  switch (c.kernel) {
    case Kernel::memory: return memory_case(o, c);
    case Kernel::copy:
    case Kernel::fill:
    case Kernel::round_from_acc: return copy_case(o, c);
    case Kernel::gemm:
    case Kernel::gemm_acc: return gemm_case(o, c);
    case Kernel::gemm_grouped:
    case Kernel::gemm_acc_grouped: return grouped_case(o, c);
    case Kernel::axpy:
    case Kernel::scale:
    case Kernel::sum_squares: return vector_case(o, c);
    case Kernel::embedding_forward:
    case Kernel::embedding_backward: return embedding_case(o, c);
    case Kernel::rmsnorm_forward:
    case Kernel::rmsnorm_backward: return rmsnorm_case(o, c);
    case Kernel::rope_forward:
    case Kernel::rope_backward: return rope_case(o, c);
    case Kernel::attention_forward: return attention_forward_case(o, c);
    case Kernel::attention_backward: return attention_backward_case(o, c);
    case Kernel::attention_head_slice: return attention_head_slice_case(o, c);
    case Kernel::attention_decode: return attention_decode_case(o, c);
    case Kernel::attention_blocks: return attention_blocks_case(o, c);
    case Kernel::attention_merge: return attention_merge_case(o, c);
    case Kernel::gelu_forward:
    case Kernel::gelu_backward: return gelu_case(o, c);
    case Kernel::swiglu_forward:
    case Kernel::swiglu_backward: return swiglu_case(o, c);
    case Kernel::sigmoid_forward:
    case Kernel::sigmoid_backward: return sigmoid_case(o, c);
    case Kernel::softmax_forward:
    case Kernel::softmax_backward: return softmax_case(o, c);
    case Kernel::cross_entropy: return cross_entropy_case(o, c);
    case Kernel::gather_rows:
    case Kernel::scatter_add_rows: return index_case(o, c);
    case Kernel::scale_rows:
    case Kernel::row_dot: return row_case(o, c);
    case Kernel::adamw: return adamw_case(o, c);
  }
}

// --- checks: one test a case and backend ------------------------------------------

template <typename B>
class CaseTest : public ::testing::Test {
 public:
  explicit CaseTest(Case c) : c_(std::move(c)) {}
  void TestBody() override {
    using T = typename B::Scalar;
    SCOPED_TRACE("bounds: " + c_.bounds_text<T>());
    Ops<T> o(B::make(), nullptr);
    run_case(o, c_);
  }

 private:
  Case c_;
};

template <typename... B>
void register_tests(const std::vector<Case>& cases, std::tuple<B...>*) {
  std::set<std::string> names;
  for (const Case& c : cases) {
    if (!names.insert(c.name()).second) throw std::logic_error("two cases are named " + c.name());
    if (!c.test) continue;
    (::testing::RegisterTest(("BackendOps/" + B::name()).c_str(), c.name().c_str(), nullptr, nullptr, __FILE__,
                             __LINE__, [c]() -> CaseTest<B>* { return new CaseTest<B>(c); }),
     ...);
  }
}

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

// --- speed: every case marked perf, in every precision ------------------------

template <typename B>
void perf_case(const Case& c, const std::regex& filter) {
  using T = typename B::Scalar;
  const std::string name = B::name() + "." + c.name();
  if (!std::regex_search(name, filter)) return;
  Timing t;
  Ops<T> o(B::make(), &t);
  run_case(o, c);
  const bool flops = t.flops > 0;
  std::printf("%-18s %-8s %-32s %10.1f us %8.1f %-7s  %s\n", kernel_name(c.kernel), precision_name<T>(),
              c.label().c_str(), t.seconds * 1e6, (flops ? t.flops : t.bytes) / t.seconds * 1e-9,
              flops ? "GFLOP/s" : "GB/s", c.role.c_str());
  std::fflush(stdout);
}

template <typename... B>
int run_perf(int threads, const std::string& filter, std::tuple<B...>*) {
  set_thread_count(threads);
  std::printf("# test_backend_ops --perf: %d thread(s); a call's time is the median of calls over 0.2 s after a warm-up call\n",
              threads);
  std::printf("%-18s %-8s %-32s %13s %16s  %s\n", "kernel", "type", "shape", "time", "rate", "in the bench step");
  const std::regex re(filter);
  for (const Case& c : table())
    if (c.perf) (perf_case<B>(c, re), ...);
  return 0;
}

int cores() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return CPU_COUNT(&set);
  return int(std::max(1u, std::thread::hardware_concurrency()));
}

}  // namespace
}  // namespace mt

// Checks: gtest's flags. Speed: --perf [--threads N] [--filter REGEX] (N:
// default the cores this process may run on; REGEX: searched in
// <backend>_<precision>.<kernel>_<shape>).
int main(int argc, char** argv) {
  bool perf = false;
  int threads = mt::cores();
  std::string filter;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--perf") {
      perf = true;
    } else if (a == "--threads" && i + 1 < argc) {
      threads = std::atoi(argv[++i]);
    } else if (a.rfind("--threads=", 0) == 0) {
      threads = std::atoi(a.c_str() + 10);
    } else if (a == "--filter" && i + 1 < argc) {
      filter = argv[++i];
    } else if (a.rfind("--filter=", 0) == 0) {
      filter = a.substr(9);
    }
  }
  if (perf) {
    if (threads < 1) {
      std::fprintf(stderr, "test_backend_ops: --threads must be >= 1\n");
      return 2;
    }
    return mt::run_perf(threads, filter, static_cast<mt::Backends*>(nullptr));
  }
  ::testing::InitGoogleTest(&argc, argv);
  mt::set_thread_count(mt::test_util::test_threads());
  mt::register_tests(mt::table(), static_cast<mt::Backends*>(nullptr));
  return RUN_ALL_TESTS();
}
