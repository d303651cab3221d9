// CPU backend: causal attention with G key/value heads, tiled with an online
// softmax (the flash-attention scheme), so that no S x S matrix is ever held.
// The forward pass keeps the output and each row's log-sum-exp; the
// backward pass recomputes the probabilities of each tile from them. Tiles
// above the diagonal (and before a row block's document, under
// --reset-attention-mask) are skipped. Scores, softmax statistics and the
// output's running sums are Acc (float32 under bf16); the probabilities and
// score gradients that feed products are rounded to T.
//
// Work is split over (sample, head, query block), cyclically so that the
// short blocks near the start and the long ones near the end share out
// evenly. A query block owns its rows of out and dq; the key and value
// gradients, which every later block adds to, are summed per thread and
// then over the threads in thread order, so that a run is deterministic for
// a given thread count.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "runtime/cpu_backend.h"
#include "runtime/cpu_math.h"

namespace mt {

namespace {

// Rows of a query block and columns of a key tile: products of
// [64, hd] x [hd, 128] keep a tile's scores in the L2 cache and each
// library call long enough to amortize its set-up.
constexpr int kQueryBlock = 64, kKeyTile = 128;

// The key columns [lo, hi) of a tile starting at key j0 with `cols` keys
// that query position i may attend to (keys [first, i] of the sample);
// 0 <= lo <= hi <= cols.
struct Visible {
  int lo, hi;
  Visible(int first, int i, int j0, int cols)
      : lo(std::clamp(first - j0, 0, cols)), hi(std::clamp(i - j0 + 1, lo, cols)) {}
  bool empty() const { return lo == hi; }
};

// The first key position token i of sample b may attend to.
int first_key(const AttentionShape& a, int b, int i) {
  return a.doc_start ? a.doc_start[size_t(b) * a.seq + i] : 0;
}

int query_blocks(int S) { return (S + kQueryBlock - 1) / kQueryBlock; }

}  // namespace

template <typename T>
void CpuBackend<T>::attention_forward(T* out, Acc* lse, const T* q, const T* k, const T* v,
                                      const AttentionShape& a) {
  const int B = a.batch, S = a.seq, H = a.heads, hd = a.head_dim, blocks = query_blocks(S);
  const int qs = H * hd, ks = a.kv_heads * hd;  // row strides of q/out and of k/v
  const Acc scale = Acc(1.0 / std::sqrt(double(hd)));
#pragma omp parallel
  {
    std::vector<Acc> scores(size_t(kQueryBlock) * kKeyTile);  // [rows, cols], stride kKeyTile
    std::vector<T> probs_stored(kMixed ? scores.size() : 0);  // the same, rounded, when T is not Acc
    std::vector<Acc> o_sum(size_t(kQueryBlock) * hd);         // [rows, hd] running sum of p v
    std::vector<Acc> row_max(kQueryBlock), row_sum(kQueryBlock);
#pragma omp for collapse(3) schedule(static, 1)
    for (int b = 0; b < B; ++b) {
      for (int h = 0; h < H; ++h) {
        for (int blk = 0; blk < blocks; ++blk) {
          const int i0 = blk * kQueryBlock, rows = std::min(kQueryBlock, S - i0), g = a.kv_of(h);
          const T* qi = q + (size_t(b) * S + i0) * qs + h * hd;  // [rows, hd], stride qs
          const T* kb = k + size_t(b) * S * ks + g * hd;         // [S, hd], stride ks
          const T* vb = v + size_t(b) * S * ks + g * hd;
          T* p;
          if constexpr (kMixed) {
            p = probs_stored.data();
          } else {
            p = scores.data();  // probabilities overwrite their scores
          }
          std::fill(row_max.begin(), row_max.end(), -std::numeric_limits<Acc>::infinity());
          std::fill(row_sum.begin(), row_sum.end(), Acc(0));
          std::fill(o_sum.begin(), o_sum.end(), Acc(0));
          for (int j0 = first_key(a, b, i0); j0 < i0 + rows; j0 += kKeyTile) {
            const int cols = std::min(kKeyTile, i0 + rows - j0);
            gemm_acc(Trans::N, Trans::T, rows, cols, hd, scale, qi, qs, kb + size_t(j0) * ks, ks, Acc(0),
                     scores.data(), kKeyTile);
            for (int r = 0; r < rows; ++r) {
              Acc* s = scores.data() + size_t(r) * kKeyTile;
              T* prow = p + size_t(r) * kKeyTile;
              const Visible vis(first_key(a, b, i0 + r), i0 + r, j0, cols);
              if (vis.empty()) {
                std::fill(prow, prow + cols, T(0));
                continue;
              }
              Acc mx = row_max[r];
#pragma omp simd reduction(max : mx)
              for (int c = vis.lo; c < vis.hi; ++c) mx = std::max(mx, s[c]);
              // The sums so far were taken against the old maximum; a row
              // with nothing visible yet has row_max -inf and sums of 0.
              const Acc rescale = row_sum[r] == Acc(0) ? Acc(0) : exp_of(row_max[r] - mx);
              Acc sum = 0;
#pragma omp simd reduction(+ : sum)
              for (int c = vis.lo; c < vis.hi; ++c) {
                const Acc e = exp_of(s[c] - mx);
                sum += e;
                prow[c] = T(e);
              }
              std::fill(prow, prow + vis.lo, T(0));
              std::fill(prow + vis.hi, prow + cols, T(0));
              row_max[r] = mx;
              row_sum[r] = row_sum[r] * rescale + sum;
              if (rescale != Acc(1))
                for (int c = 0; c < hd; ++c) o_sum[size_t(r) * hd + c] *= rescale;
            }
            gemm_acc(Trans::N, Trans::N, rows, hd, cols, Acc(1), p, kKeyTile, vb + size_t(j0) * ks, ks, Acc(1),
                     o_sum.data(), hd);
          }
          for (int r = 0; r < rows; ++r) {
            const Acc inv = Acc(1) / row_sum[r];
            T* orow = out + (size_t(b) * S + i0 + r) * qs + h * hd;
            for (int c = 0; c < hd; ++c) orow[c] = T(o_sum[size_t(r) * hd + c] * inv);
            lse[(size_t(b) * H + h) * S + i0 + r] = row_max[r] + std::log(row_sum[r]);
          }
        }
      }
    }
  }
}

template <typename T>
void CpuBackend<T>::attention_backward(T* dq, T* dk, T* dv, const T* dout, const T* out, const Acc* lse,
                                       const T* q, const T* k, const T* v, const AttentionShape& a) {
  const int B = a.batch, S = a.seq, H = a.heads, G = a.kv_heads, hd = a.head_dim, blocks = query_blocks(S);
  const int qs = H * hd, ks = G * hd;
  const size_t kv_size = size_t(B) * S * ks;
  const Acc scale = Acc(1.0 / std::sqrt(double(hd)));
  std::vector<std::vector<Acc>> dk_of_thread(omp_get_max_threads()), dv_of_thread(omp_get_max_threads());
#pragma omp parallel
  {
    std::vector<Acc>& dk_sum = dk_of_thread[omp_get_thread_num()];  // [B*S, G*hd] this thread's share
    std::vector<Acc>& dv_sum = dv_of_thread[omp_get_thread_num()];
    dk_sum.assign(kv_size, Acc(0));
    dv_sum.assign(kv_size, Acc(0));
    std::vector<Acc> probs(size_t(kQueryBlock) * kKeyTile);     // [rows, cols], stride kKeyTile
    std::vector<Acc> dprobs(probs.size());                      // their gradient
    std::vector<T> probs_stored(kMixed ? probs.size() : 0);     // rounded, when T is not Acc
    std::vector<T> dscores_stored(kMixed ? probs.size() : 0);
    std::vector<Acc> dq_sum(size_t(kQueryBlock) * hd);          // [rows, hd]
    std::vector<Acc> row_dot(kQueryBlock);                      // D = rowsum(dO * O)
#pragma omp for collapse(3) schedule(static, 1)
    for (int b = 0; b < B; ++b) {
      for (int h = 0; h < H; ++h) {
        for (int blk = 0; blk < blocks; ++blk) {
          const int i0 = blk * kQueryBlock, rows = std::min(kQueryBlock, S - i0), g = a.kv_of(h);
          const size_t row0 = (size_t(b) * S + i0) * qs + h * hd;
          const T *qi = q + row0, *doi = dout + row0, *oi = out + row0;  // [rows, hd], stride qs
          const T* kb = k + size_t(b) * S * ks + g * hd;                 // [S, hd], stride ks
          const T* vb = v + size_t(b) * S * ks + g * hd;
          Acc* dkb = dk_sum.data() + size_t(b) * S * ks + g * hd;
          Acc* dvb = dv_sum.data() + size_t(b) * S * ks + g * hd;
          const Acc* lse_i = lse + (size_t(b) * H + h) * S + i0;
          T *p, *ds;
          if constexpr (kMixed) {
            p = probs_stored.data();
            ds = dscores_stored.data();
          } else {
            p = probs.data();
            ds = dprobs.data();  // dS overwrites dP
          }
          for (int r = 0; r < rows; ++r) {
            double dot = 0.0;
#pragma omp simd reduction(+ : dot)
            for (int c = 0; c < hd; ++c) dot += double(doi[size_t(r) * qs + c]) * double(oi[size_t(r) * qs + c]);
            row_dot[r] = Acc(dot);
          }
          std::fill(dq_sum.begin(), dq_sum.end(), Acc(0));
          for (int j0 = first_key(a, b, i0); j0 < i0 + rows; j0 += kKeyTile) {
            const int cols = std::min(kKeyTile, i0 + rows - j0);
            const T* kj = kb + size_t(j0) * ks;
            const T* vj = vb + size_t(j0) * ks;
            // P = exp(scale Q K^T - lse), 0 where not visible
            gemm_acc(Trans::N, Trans::T, rows, cols, hd, scale, qi, qs, kj, ks, Acc(0), probs.data(), kKeyTile);
            for (int r = 0; r < rows; ++r) {
              Acc* prow = probs.data() + size_t(r) * kKeyTile;
              const Visible vis(first_key(a, b, i0 + r), i0 + r, j0, cols);
              std::fill(prow, prow + vis.lo, Acc(0));
              for (int c = vis.lo; c < vis.hi; ++c) prow[c] = exp_of(prow[c] - lse_i[r]);
              std::fill(prow + vis.hi, prow + cols, Acc(0));
              if constexpr (kMixed)
                for (int c = 0; c < cols; ++c) p[size_t(r) * kKeyTile + c] = T(prow[c]);
            }
            // dV += P^T dO;  dP = dO V^T
            gemm_acc(Trans::T, Trans::N, cols, hd, rows, Acc(1), p, kKeyTile, doi, qs, Acc(1),
                     dvb + size_t(j0) * ks, ks);
            gemm_acc(Trans::N, Trans::T, rows, cols, hd, Acc(1), doi, qs, vj, ks, Acc(0), dprobs.data(), kKeyTile);
            // softmax backward, scaled: dS = scale P (dP - D); 0 where P is
            for (int r = 0; r < rows; ++r) {
              const Acc* prow = probs.data() + size_t(r) * kKeyTile;
              const Acc* dprow = dprobs.data() + size_t(r) * kKeyTile;
              T* dsrow = ds + size_t(r) * kKeyTile;
#pragma omp simd
              for (int c = 0; c < cols; ++c) dsrow[c] = T(scale * prow[c] * (dprow[c] - row_dot[r]));
            }
            // scores = scale Q K^T:  dQ += dS K;  dK += dS^T Q
            gemm_acc(Trans::N, Trans::N, rows, hd, cols, Acc(1), ds, kKeyTile, kj, ks, Acc(1), dq_sum.data(), hd);
            gemm_acc(Trans::T, Trans::N, cols, hd, rows, Acc(1), ds, kKeyTile, qi, qs, Acc(1), dkb + size_t(j0) * ks,
                     ks);
          }
          for (int r = 0; r < rows; ++r) {
            T* dqrow = dq + row0 + size_t(r) * qs;
            for (int c = 0; c < hd; ++c) dqrow[c] = T(Acc(dqrow[c]) + dq_sum[size_t(r) * hd + c]);
          }
        }
      }
    }
    // The threads' key and value gradients, summed in thread order.
#pragma omp for schedule(static)
    for (size_t e = 0; e < kv_size; ++e) {
      Acc dk_e = dk[e], dv_e = dv[e];
      for (size_t t = 0; t < dk_of_thread.size(); ++t) {
        if (dk_of_thread[t].empty()) continue;  // a thread the runtime did not start
        dk_e += dk_of_thread[t][e];
        dv_e += dv_of_thread[t][e];
      }
      dk[e] = T(dk_e);
      dv[e] = T(dv_e);
    }
  }
}

template class CpuBackend<float>;
template class CpuBackend<double>;
template class CpuBackend<bf16>;

}  // namespace mt
