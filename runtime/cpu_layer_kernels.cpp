// CPU backend: the per-layer kernels (embedding, norm, RoPE, GELU, softmax,
// cross-entropy, MoE row dispatch). Sums run in double so that the
// precisions differ only by rounding of the stored values; a bf16 value is
// read into float and the result rounded once.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "runtime/cpu_backend.h"
#include "runtime/cpu_math.h"

namespace mt {

template <typename T>
void CpuBackend<T>::embedding_forward(T* out, const T* table, const int32_t* tokens, int n, int d,
                                      int vocab_start, int rows) {
#pragma omp parallel for schedule(static)
  for (int t = 0; t < n; ++t) {
    const int r = tokens[t] - vocab_start;
    T* o = out + size_t(t) * d;
    if (r < 0 || r >= rows) {
      std::fill(o, o + d, T(0));
      continue;
    }
    const T* row = table + size_t(r) * d;
    for (int j = 0; j < d; ++j) o[j] = row[j];
  }
}

template <typename T>
void CpuBackend<T>::embedding_backward(Acc* dtable, const T* dout, const int32_t* tokens, int n,
                                       int d, int vocab_start, int rows) {
  // Tokens repeat, so rows are accumulated serially over t; columns in parallel.
#pragma omp parallel for schedule(static)
  for (int j = 0; j < d; ++j)
    for (int t = 0; t < n; ++t) {
      const int r = tokens[t] - vocab_start;
      if (r >= 0 && r < rows) dtable[size_t(r) * d + j] += dout[size_t(t) * d + j];
    }
}

template <typename T>
void CpuBackend<T>::rmsnorm_forward(T* out, Acc* rstd, const T* x, const T* g, int n, int d, double eps) {
#pragma omp parallel for schedule(static)
  for (int i = 0; i < n; ++i) {
    const T* xi = x + size_t(i) * d;
    double ss = 0.0;
#pragma omp simd reduction(+ : ss)
    for (int j = 0; j < d; ++j) ss += double(xi[j]) * double(xi[j]);
    const Acc r = Acc(1.0 / std::sqrt(ss / d + double(Acc(eps))));
    rstd[i] = r;
    for (int j = 0; j < d; ++j) out[size_t(i) * d + j] = T(Acc(xi[j]) * r * Acc(g[j]));
  }
}

template <typename T>
void CpuBackend<T>::rmsnorm_backward(T* dx, Acc* dg, const T* dout, const T* x, const T* g,
                                     const Acc* rstd, int n, int d) {
  // y = x r g with r = (mean(x^2) + eps)^-1/2:
  // dx = r (dy g) - x r^3 / d * sum(dy g x);  dg = sum_rows dy x r.
#pragma omp parallel for schedule(static)
  for (int i = 0; i < n; ++i) {
    const T* xi = x + size_t(i) * d;
    const T* dyi = dout + size_t(i) * d;
    double dot = 0.0;
#pragma omp simd reduction(+ : dot)
    for (int j = 0; j < d; ++j) dot += double(dyi[j]) * double(g[j]) * double(xi[j]);
    double r = rstd[i];
    double c = dot * r * r * r / d;
    // Rounded through Acc: one vectorized float-to-bf16 rounding under bf16.
    for (int j = 0; j < d; ++j)
      dx[size_t(i) * d + j] = T(Acc(double(dx[size_t(i) * d + j]) + r * double(dyi[j]) * double(g[j]) - c * double(xi[j])));
  }
  // dg: each thread sums its rows into its own row of partials (contiguous,
  // so the loop vectorizes), then the partials are added in thread order.
  std::vector<double> partial;
#pragma omp parallel
  {
#pragma omp single
    partial.assign(size_t(omp_get_num_threads()) * d, 0.0);
    double* mine = partial.data() + size_t(omp_get_thread_num()) * d;
#pragma omp for schedule(static)
    for (int i = 0; i < n; ++i) {
      const double r = rstd[i];
      const T* dyi = dout + size_t(i) * d;
      const T* xi = x + size_t(i) * d;
      for (int j = 0; j < d; ++j) mine[j] += double(dyi[j]) * double(xi[j]) * r;
    }
  }
  const size_t threads = partial.size() / size_t(d);
  for (int j = 0; j < d; ++j) {
    double sum = 0.0;
    for (size_t t = 0; t < threads; ++t) sum += partial[t * d + j];
    dg[j] += Acc(sum);
  }
}

template <typename T>
void CpuBackend<T>::rope_rotate(T* x, const RopeShape& rs, double direction) {
  // direction +1 rotates by +angle (forward); -1 by the inverse angle,
  // which is the transpose of the rotation and so the backward pass.
  const int seq = rs.seq, hd = rs.head_dim, half = hd / 2, heads = rs.heads;
  const int positions = rs.position ? rs.positions : seq;
  // cos and sin of position / interpolation * theta^(-2i/hd), [positions,
  // half], kept while the shape stays.
  if (rope_.positions != positions || rope_.hd != hd || rope_.theta != rs.theta || rope_.interpolation != rs.interpolation) {
    rope_ = {positions, hd, rs.theta, rs.interpolation, std::vector<Acc>(size_t(positions) * half),
             std::vector<Acc>(size_t(positions) * half)};
    for (int pos = 0; pos < positions; ++pos)
      for (int i = 0; i < half; ++i) {
        const double angle = pos / rs.interpolation * std::pow(double(Acc(rs.theta)), -2.0 * i / hd);
        rope_.cos[size_t(pos) * half + i] = Acc(std::cos(angle));
        rope_.sin[size_t(pos) * half + i] = Acc(std::sin(angle));
      }
  }
  const Acc sign = Acc(direction);
#pragma omp parallel
  {
    // One token's heads in Acc: the rotation of a head's halves then
    // vectorizes (in T, GCC leaves it scalar for bf16).
    std::vector<Acc> row(size_t(heads) * hd);
#pragma omp for schedule(static)
    for (int r = 0; r < rs.batch * seq; ++r) {
      const int pos = rs.position ? rs.position[r] : r % seq - (rs.doc_start ? rs.doc_start[r] : 0);
      const Acc* cs = rope_.cos.data() + size_t(pos) * half;
      const Acc* sn = rope_.sin.data() + size_t(pos) * half;
      T* xr = x + size_t(r) * row.size();
      for (size_t e = 0; e < row.size(); ++e) row[e] = Acc(xr[e]);
      for (int h = 0; h < heads; ++h) {
        // Pair i is elements i and i + half of the head: two halves that
        // never overlap, which GCC vectorizes only when told.
        Acc* __restrict first = row.data() + size_t(h) * hd;
        Acc* __restrict second = first + half;
        for (int i = 0; i < half; ++i) {
          const Acc a = first[i], b = second[i], s = sign * sn[i];
          first[i] = a * cs[i] - b * s;
          second[i] = a * s + b * cs[i];
        }
      }
      for (size_t e = 0; e < row.size(); ++e) xr[e] = T(row[e]);
    }
  }
}

template <typename T>
void CpuBackend<T>::rope_forward(T* x, const RopeShape& r) {
  rope_rotate(x, r, 1.0);
}

template <typename T>
void CpuBackend<T>::rope_backward(T* dx, const RopeShape& r) {
  rope_rotate(dx, r, -1.0);
}

namespace {
constexpr double kGeluC = 0.7978845608028654;  // sqrt(2 / pi)
constexpr double kGeluA = 0.044715;
}  // namespace

template <typename T>
void CpuBackend<T>::gelu_forward(T* out, const T* in, size_t n) {
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < n; ++i) {
    const Acc x = in[i];
    out[i] = T(Acc(0.5) * x * (Acc(1) + tanh_of(Acc(kGeluC) * (x + Acc(kGeluA) * x * x * x))));
  }
}

template <typename T>
void CpuBackend<T>::gelu_backward(T* din, const T* dout, const T* in, size_t n) {
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < n; ++i) {
    const Acc x = in[i];
    const Acc t = tanh_of(Acc(kGeluC) * (x + Acc(kGeluA) * x * x * x));
    const Acc dt = Acc(kGeluC) * (Acc(1) + Acc(3 * kGeluA) * x * x);
    din[i] = T(Acc(dout[i]) * (Acc(0.5) * (Acc(1) + t) + Acc(0.5) * x * (Acc(1) - t * t) * dt));
  }
}

namespace {
// 1 / (1 + exp(-x)), vectorizable in float (exp_of).
template <typename Acc>
Acc sigmoid_of(Acc x) {
  return Acc(1) / (Acc(1) + exp_of(-x));
}
}  // namespace

template <typename T>
void CpuBackend<T>::swiglu_forward(T* out, const T* gate, const T* up, size_t n) {
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < n; ++i) {
    const Acc a = gate[i];
    out[i] = T(a * sigmoid_of(a) * Acc(up[i]));
  }
}

template <typename T>
void CpuBackend<T>::swiglu_backward(T* dgate, T* dup, const T* dout, const T* gate, const T* up, size_t n) {
  // silu(a) = a s(a); silu'(a) = s(a) (1 + a (1 - s(a))).
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < n; ++i) {
    const Acc a = gate[i], s = sigmoid_of(a), dy = dout[i];
    dgate[i] = T(dy * Acc(up[i]) * s * (Acc(1) + a * (Acc(1) - s)));
    dup[i] = T(dy * a * s);
  }
}

template <typename T>
void CpuBackend<T>::sigmoid_forward(T* y, const T* x, size_t n) {
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < n; ++i) y[i] = T(sigmoid_of(Acc(x[i])));
}

template <typename T>
void CpuBackend<T>::sigmoid_backward(T* dx, const T* dy, const T* y, size_t n) {
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < n; ++i) {
    const Acc s = y[i];
    dx[i] = T(Acc(dy[i]) * s * (Acc(1) - s));
  }
}

template <typename T>
void CpuBackend<T>::softmax_forward(T* p, const T* x, int n, int c) {
#pragma omp parallel for schedule(static)
  for (int i = 0; i < n; ++i) {
    const T* xi = x + size_t(i) * c;
    T* pi = p + size_t(i) * c;
    Acc mx = xi[0];
    for (int j = 1; j < c; ++j) mx = std::max(mx, Acc(xi[j]));
    double sum = 0.0;
    for (int j = 0; j < c; ++j) sum += double(std::exp(Acc(xi[j]) - mx));
    const Acc inv = Acc(1.0 / sum);
    for (int j = 0; j < c; ++j) pi[j] = T(std::exp(Acc(xi[j]) - mx) * inv);
  }
}

template <typename T>
void CpuBackend<T>::softmax_backward(T* dx, const T* dp, const T* p, int n, int c) {
#pragma omp parallel for schedule(static)
  for (int i = 0; i < n; ++i) {
    const T* dpi = dp + size_t(i) * c;
    const T* pi = p + size_t(i) * c;
    double dot = 0.0;
    for (int j = 0; j < c; ++j) dot += double(dpi[j]) * double(pi[j]);
    for (int j = 0; j < c; ++j) dx[size_t(i) * c + j] += Acc(double(pi[j]) * (double(dpi[j]) - dot));
  }
}

template <typename T>
void CpuBackend<T>::row_max(T* m, const T* logits, int n, int v) {
#pragma omp parallel for schedule(static)
  for (int i = 0; i < n; ++i) m[i] = *std::max_element(logits + size_t(i) * v, logits + size_t(i + 1) * v);
}

template <typename T>
void CpuBackend<T>::ce_partials(T* p, const T* logits, const T* m, const int32_t* targets, int n,
                                int v, int vocab_start) {
#pragma omp parallel for schedule(static)
  for (int i = 0; i < n; ++i) {
    const T* li = logits + size_t(i) * v;
    double sum = 0.0;
    for (int j = 0; j < v; ++j) sum += std::exp(double(li[j]) - double(m[i]));
    const int t = targets[i] - vocab_start;
    p[2 * i] = T(sum);
    p[2 * i + 1] = t >= 0 && t < v ? li[t] : T(0);
  }
}

template <typename T>
void CpuBackend<T>::ce_finish(Acc* losses, T* dlogits, const Acc* logits, const Acc* m, const Acc* p,
                              const int32_t* targets, int n, int v, int vocab_start, double dscale) {
#pragma omp parallel for schedule(static)
  for (int i = 0; i < n; ++i) {
    const double lse = double(m[i]) + std::log(double(p[2 * i]));
    if (losses) losses[i] = Acc(lse - double(p[2 * i + 1]));
    if (!dlogits) continue;
    const Acc* li = logits + size_t(i) * v;
    T* di = dlogits + size_t(i) * v;
    const Acc scale = Acc(dscale);
    const int t = targets[i] - vocab_start;
    for (int j = 0; j < v; ++j) di[j] = T((exp_of(Acc(double(li[j]) - lse)) - Acc(j == t ? 1 : 0)) * scale);
  }
}

template <typename T>
void CpuBackend<T>::gather_rows(T* dst, const T* src, const int32_t* idx, int m, int d) {
#pragma omp parallel for schedule(static)
  for (int i = 0; i < m; ++i) {
    std::memcpy(dst + size_t(i) * d, src + size_t(idx[i]) * d, size_t(d) * sizeof(T));
  }
}

template <typename T>
void CpuBackend<T>::scatter_add_rows(T* dst, const T* src, const int32_t* idx, const Acc* weight,
                                     int m, int d) {
#pragma omp parallel for schedule(static)
  for (int i = 0; i < m; ++i) {
    const Acc w = weight ? weight[i] : Acc(1);
    T* o = dst + size_t(idx[i]) * d;
    for (int j = 0; j < d; ++j) o[j] = T(Acc(o[j]) + w * Acc(src[size_t(i) * d + j]));
  }
}

template <typename T>
void CpuBackend<T>::scale_rows(T* x, const Acc* w, int m, int d) {
#pragma omp parallel for schedule(static)
  for (int i = 0; i < m; ++i)
    for (int j = 0; j < d; ++j) x[size_t(i) * d + j] = T(Acc(x[size_t(i) * d + j]) * w[i]);
}

template <typename T>
void CpuBackend<T>::row_dot(Acc* out, const T* a, const T* b, int m, int d) {
#pragma omp parallel for schedule(static)
  for (int i = 0; i < m; ++i) {
    double s = 0.0;
#pragma omp simd reduction(+ : s)
    for (int j = 0; j < d; ++j) s += double(a[size_t(i) * d + j]) * double(b[size_t(i) * d + j]);
    out[i] = Acc(s);
  }
}

template class CpuBackend<float>;
template class CpuBackend<double>;
template class CpuBackend<bf16>;

}  // namespace mt
