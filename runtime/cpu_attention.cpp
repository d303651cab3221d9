// CPU backend: causal attention with G key/value heads, one product per
// (sample, head). Scores and their softmax are computed in Acc (float32 under
// bf16); the S x S probabilities are kept, in T, for the backward pass.
#include <omp.h>

#include <cmath>
#include <vector>

#include "runtime/cpu_backend.h"
#include "runtime/cpu_math.h"

namespace mt {

template <typename T>
void CpuBackend<T>::attention_forward(T* out, T* probs, const T* q, const T* k, const T* v,
                                      const AttentionShape& a) {
  const int B = a.batch, S = a.seq, H = a.heads, hd = a.head_dim;
  const int qs = H * hd, ks = a.kv_heads * hd;  // row strides of q/out and of k/v
  const Acc scale = Acc(1.0 / std::sqrt(double(hd)));
  // Parallel over (sample, head) when there is enough of them; otherwise
  // the library threads the products themselves (one thread inside an
  // OpenMP parallel region).
#pragma omp parallel if (B * H >= omp_get_max_threads())
  {
    std::vector<Acc> scores_acc(kMixed ? size_t(S) * S : 0);  // [S, S] when T is not Acc
#pragma omp for collapse(2) schedule(static)
    for (int b = 0; b < B; ++b) {
      for (int h = 0; h < H; ++h) {
        const int g = a.kv_of(h);
        const T* qb = q + size_t(b) * S * qs + h * hd;  // [S, hd], stride qs
        const T* kb = k + size_t(b) * S * ks + g * hd;  // [S, hd], stride ks
        const T* vb = v + size_t(b) * S * ks + g * hd;
        T* p = probs + (size_t(b) * H + h) * S * S;     // [S, S]
        Acc* scores;
        if constexpr (kMixed) {
          scores = scores_acc.data();
        } else {
          scores = p;  // the softmax overwrites its input row by row
        }
        gemm_acc(Trans::N, Trans::T, S, S, hd, scale, qb, qs, kb, ks, Acc(0), scores, S);
        for (int i = 0; i < S; ++i) {
          Acc* s = scores + size_t(i) * S;
          T* row = p + size_t(i) * S;
          Acc mx = s[0];
#pragma omp simd reduction(max : mx)
          for (int j = 1; j <= i; ++j) mx = std::max(mx, s[j]);
          Acc sum = 0;  // at most S terms in (0, 1]
#pragma omp simd reduction(+ : sum)
          for (int j = 0; j <= i; ++j) sum += (s[j] = exp_of(s[j] - mx));
          const Acc inv = Acc(1) / sum;
          for (int j = 0; j <= i; ++j) row[j] = T(s[j] * inv);
          for (int j = i + 1; j < S; ++j) row[j] = T(0);
        }
        gemm(Trans::N, Trans::N, S, hd, S, T(1), p, S, vb, ks, T(0), out + size_t(b) * S * qs + h * hd, qs);
      }
    }
  }
}

template <typename T>
void CpuBackend<T>::attention_backward(T* dq, T* dk, T* dv, const T* dout, const T* probs,
                                       const T* q, const T* k, const T* v, const AttentionShape& a) {
  const int B = a.batch, S = a.seq, H = a.heads, G = a.kv_heads, hd = a.head_dim;
  const int qs = H * hd, ks = G * hd;
  const double scale = 1.0 / std::sqrt(double(hd));  // folded into dS, so that T need not hold it
  // The heads of one group write the same dk/dv rows, so the parallel loop
  // runs over (sample, kv head) and the heads of a group go in sequence.
#pragma omp parallel if (B * G >= omp_get_max_threads())
  {
    std::vector<Acc> dp(size_t(S) * S);                  // [S, S] gradient of the probabilities
    std::vector<T> ds_stored(kMixed ? size_t(S) * S : 0);  // [S, S] that of the scores, when T is not Acc
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
          T* ds;
          if constexpr (kMixed) {
            ds = ds_stored.data();
          } else {
            ds = dp.data();  // dS overwrites dP row by row
          }
          // dV += P^T dO;  dP = dO V^T
          gemm(Trans::T, Trans::N, S, hd, S, T(1), p, S, dob, qs, T(1), dvb, ks);
          gemm_acc(Trans::N, Trans::T, S, S, hd, Acc(1), dob, qs, vb, ks, Acc(0), dp.data(), S);
          // softmax backward, scaled: dS = scale P * (dP - rowsum(dP * P));
          // masked entries have P = 0
          for (int i = 0; i < S; ++i) {
            const Acc* dprow = dp.data() + size_t(i) * S;
            T* row = ds + size_t(i) * S;
            const T* prow = p + size_t(i) * S;
            double dot = 0.0;
#pragma omp simd reduction(+ : dot)
            for (int j = 0; j <= i; ++j) dot += double(dprow[j]) * double(prow[j]);
            for (int j = 0; j <= i; ++j) row[j] = T(scale * double(prow[j]) * (double(dprow[j]) - dot));
            for (int j = i + 1; j < S; ++j) row[j] = T(0);
          }
          // scores = scale Q K^T:  dQ += (scale dS) K;  dK += (scale dS)^T Q
          gemm(Trans::N, Trans::N, S, hd, S, T(1), ds, S, kb, ks, T(1), dqb, qs);
          gemm(Trans::T, Trans::N, S, hd, S, T(1), ds, S, qb, qs, T(1), dkb, ks);
        }
      }
    }
  }
}

template class CpuBackend<float>;
template class CpuBackend<double>;
template class CpuBackend<bf16>;

}  // namespace mt
