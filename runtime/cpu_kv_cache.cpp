// CPU backend: generation's key/value cache. A step's rows write their keys
// and values into the cache, then each query row attends to its sequence's
// positions up to its own: one pass over those positions a head, as a
// single query row needs no tiling. Scores, the softmax and the output's
// sum are Acc (float32 under bf16).
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "runtime/cpu_backend.h"
#include "runtime/cpu_math.h"

namespace mt {

namespace {
// The cache row of sequence s's kv head g at position p.
size_t cache_row(const KvCacheShape& c, int s, int g, int p) {
  return (size_t(s) * c.kv_heads + g) * c.positions + p;
}
}  // namespace

template <typename T>
void CpuBackend<T>::kv_cache_store(T* cache, const T* x, const int32_t* seq, const int32_t* pos, int n,
                                   const KvCacheShape& c) {
  const int hd = c.head_dim;
#pragma omp parallel for collapse(2) schedule(static)
  for (int i = 0; i < n; ++i)
    for (int g = 0; g < c.kv_heads; ++g) {
      const T* from = x + (size_t(i) * c.kv_heads + g) * hd;
      std::copy(from, from + hd, cache + cache_row(c, seq[i], g, pos[i]) * hd);
    }
}

template <typename T>
void CpuBackend<T>::attention_decode(T* out, const T* q, const T* k_cache, const T* v_cache, const int32_t* seq,
                                     const int32_t* pos, int n, const AttentionShape& a, const KvCacheShape& c) {
  const int H = a.heads, hd = a.head_dim;
  const Acc scale = Acc(1.0 / std::sqrt(double(hd)));
#pragma omp parallel
  {
    std::vector<Acc> p(static_cast<size_t>(c.positions)), sum(static_cast<size_t>(hd));
#pragma omp for collapse(2) schedule(static)
    for (int i = 0; i < n; ++i)
      for (int h = 0; h < H; ++h) {
        const T* qi = q + (size_t(i) * H + h) * hd;
        const size_t row0 = cache_row(c, seq[i], a.kv_of(h), 0);
        const T* k = k_cache + row0 * hd;  // [positions, hd]
        const T* v = v_cache + row0 * hd;
        const int keys = pos[i] + 1;
        Acc mx = -std::numeric_limits<Acc>::infinity();
        for (int j = 0; j < keys; ++j) {
          Acc s = 0;
          for (int e = 0; e < hd; ++e) s += Acc(qi[e]) * Acc(k[size_t(j) * hd + e]);
          p[j] = s * scale;
          mx = std::max(mx, p[j]);
        }
        Acc total = 0;
        for (int j = 0; j < keys; ++j) total += (p[j] = exp_of(p[j] - mx));
        std::fill(sum.begin(), sum.end(), Acc(0));
        for (int j = 0; j < keys; ++j)
          for (int e = 0; e < hd; ++e) sum[e] += p[j] * Acc(v[size_t(j) * hd + e]);
        T* o = out + (size_t(i) * H + h) * hd;
        for (int e = 0; e < hd; ++e) o[e] = T(sum[e] / total);
      }
  }
}

template class CpuBackend<float>;
template class CpuBackend<double>;
template class CpuBackend<bf16>;

}  // namespace mt
