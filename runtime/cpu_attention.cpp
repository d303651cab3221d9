// CPU backend: causal attention with G key/value heads, one BLAS product per
// (sample, head). The S x S probabilities are kept for the backward pass.
#include <omp.h>

#include <cmath>
#include <vector>

#include "runtime/cpu_backend.h"

namespace mt {

template <typename T>
void CpuBackend<T>::attention_forward(T* out, T* probs, const T* q, const T* k, const T* v,
                                      const AttentionShape& a) {
  const int B = a.batch, S = a.seq, H = a.heads, hd = a.head_dim;
  const int qs = H * hd, ks = a.kv_heads * hd;  // row strides of q/out and of k/v
  const T scale = T(1.0 / std::sqrt(double(hd)));
  // Parallel over (sample, head) when there is enough of them; otherwise
  // BLAS threads the products themselves (OpenBLAS runs one thread inside an
  // OpenMP parallel region).
#pragma omp parallel for collapse(2) schedule(static) if (B * H >= omp_get_max_threads())
  for (int b = 0; b < B; ++b) {
    for (int h = 0; h < H; ++h) {
      const int g = a.kv_of(h);
      const T* qb = q + size_t(b) * S * qs + h * hd;  // [S, hd], stride qs
      const T* kb = k + size_t(b) * S * ks + g * hd;  // [S, hd], stride ks
      const T* vb = v + size_t(b) * S * ks + g * hd;
      T* p = probs + (size_t(b) * H + h) * S * S;     // [S, S]
      gemm(Trans::N, Trans::T, S, S, hd, scale, qb, qs, kb, ks, T(0), p, S);
      for (int i = 0; i < S; ++i) {
        T* row = p + size_t(i) * S;
        T mx = row[0];
        for (int j = 1; j <= i; ++j) mx = std::max(mx, row[j]);
        double sum = 0.0;
        for (int j = 0; j <= i; ++j) sum += double(row[j] = std::exp(row[j] - mx));
        T inv = T(1.0 / sum);
        for (int j = 0; j <= i; ++j) row[j] *= inv;
        for (int j = i + 1; j < S; ++j) row[j] = T(0);
      }
      gemm(Trans::N, Trans::N, S, hd, S, T(1), p, S, vb, ks, T(0),
           out + size_t(b) * S * qs + h * hd, qs);
    }
  }
}

template <typename T>
void CpuBackend<T>::attention_backward(T* dq, T* dk, T* dv, const T* dout, const T* probs,
                                       const T* q, const T* k, const T* v, const AttentionShape& a) {
  const int B = a.batch, S = a.seq, H = a.heads, G = a.kv_heads, hd = a.head_dim;
  const int qs = H * hd, ks = G * hd;
  const T scale = T(1.0 / std::sqrt(double(hd)));
  // The heads of one group write the same dk/dv rows, so the parallel loop
  // runs over (sample, kv head) and the heads of a group go in sequence.
#pragma omp parallel if (B * G >= omp_get_max_threads())
  {
    std::vector<T> ds(size_t(S) * S);  // [S, S] gradient of the scores
#pragma omp for collapse(2) schedule(static)
    for (int b = 0; b < B; ++b) {
      for (int g = 0; g < G; ++g) {
        const T* kb = k + size_t(b) * S * ks + g * hd;
        const T* vb = v + size_t(b) * S * ks + g * hd;
        T* dkb = dk + size_t(b) * S * ks + g * hd;
        T* dvb = dv + size_t(b) * S * ks + g * hd;
        for (int h = 0; h < H; ++h) {
          if (a.kv_of(h) != g) continue;
          const T* qb = q + size_t(b) * S * qs + h * hd;
          const T* dob = dout + size_t(b) * S * qs + h * hd;
          T* dqb = dq + size_t(b) * S * qs + h * hd;
          const T* p = probs + (size_t(b) * H + h) * S * S;
          // dV += P^T dO;  dP = dO V^T
          gemm(Trans::T, Trans::N, S, hd, S, T(1), p, S, dob, qs, T(1), dvb, ks);
          gemm(Trans::N, Trans::T, S, S, hd, T(1), dob, qs, vb, ks, T(0), ds.data(), S);
          // softmax backward: dS = P * (dP - rowsum(dP * P)); masked entries have P = 0
          for (int i = 0; i < S; ++i) {
            T* row = ds.data() + size_t(i) * S;
            const T* prow = p + size_t(i) * S;
            double dot = 0.0;
            for (int j = 0; j <= i; ++j) dot += double(row[j]) * prow[j];
            for (int j = 0; j <= i; ++j) row[j] = T(prow[j] * (row[j] - dot));
            for (int j = i + 1; j < S; ++j) row[j] = T(0);
          }
          // scores = scale Q K^T:  dQ += scale dS K;  dK += scale dS^T Q
          gemm(Trans::N, Trans::N, S, hd, S, scale, ds.data(), S, kb, ks, T(1), dqb, qs);
          gemm(Trans::T, Trans::N, S, hd, S, scale, ds.data(), S, qb, qs, T(1), dkb, ks);
        }
      }
    }
  }
}

template class CpuBackend<float>;
template class CpuBackend<double>;

}  // namespace mt
