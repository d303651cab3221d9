// CPU backend: causal attention with G key/value heads, tiled with an online
// softmax (the flash-attention scheme), so that no S x S matrix is ever held.
// The forward pass keeps the output and each row's log-sum-exp; the
// backward pass recomputes the probabilities of each tile from them. Tiles
// above the diagonal (and before a row block's document, under
// --reset-attention-mask) are skipped. Scores, probabilities, their
// gradients, softmax statistics and the output's running sums are Acc
// (float32 under bf16). Under bf16 each block and tile of q, k, v and dO is
// widened to float32 and the tile products run in float32: a product of two
// bf16 values is exact in float32, so this is a bf16 product with float32
// accumulation, and at these tile sizes oneDNN's bf16 matmul costs more to
// start than to run.
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
#include <type_traits>
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

// `rows` rows of `cols` elements of x (row stride `stride`) as Acc: x itself
// when T is Acc, else a widened copy in `wide`.
template <typename Acc>
struct AccRows {
  const Acc* data;
  int stride;
};
template <typename T, typename Acc>
AccRows<Acc> acc_rows(const T* x, int stride, int rows, int cols, std::vector<Acc>& wide) {
  if constexpr (std::is_same_v<T, Acc>) {
    return {x, stride};
  } else {
    for (int r = 0; r < rows; ++r)
      for (int c = 0; c < cols; ++c) wide[size_t(r) * cols + c] = Acc(x[size_t(r) * stride + c]);
    return {wide.data(), cols};
  }
}

}  // namespace

template <typename T>
void CpuBackend<T>::attention_forward(T* out, Acc* lse, const T* q, const T* k, const T* v,
                                      const AttentionShape& a) {
  const int B = a.batch, S = a.seq, H = a.heads, hd = a.head_dim, blocks = query_blocks(S);
  const int qs = H * hd, ks = a.kv_heads * hd;  // row strides of q/out and of k/v
  const Acc scale = Acc(1.0 / std::sqrt(double(hd)));
#pragma omp parallel
  {
    // [rows, cols], stride kKeyTile; the probabilities overwrite their scores
    std::vector<Acc> scores(size_t(kQueryBlock) * kKeyTile);
    std::vector<Acc> o_sum(size_t(kQueryBlock) * hd);  // [rows, hd] running sum of p v
    std::vector<Acc> q_wide(kMixed ? size_t(kQueryBlock) * hd : 0);  // widened blocks, under bf16
    std::vector<Acc> k_wide(kMixed ? size_t(kKeyTile) * hd : 0), v_wide(k_wide.size());
    std::vector<Acc> row_max(kQueryBlock), row_sum(kQueryBlock);
#pragma omp for collapse(3) schedule(static, 1)
    for (int b = 0; b < B; ++b) {
      for (int h = 0; h < H; ++h) {
        for (int blk = 0; blk < blocks; ++blk) {
          const int i0 = blk * kQueryBlock, rows = std::min(kQueryBlock, S - i0), g = a.kv_of(h);
          const T* qi = q + (size_t(b) * S + i0) * qs + h * hd;  // [rows, hd], stride qs
          const T* kb = k + size_t(b) * S * ks + g * hd;         // [S, hd], stride ks
          const T* vb = v + size_t(b) * S * ks + g * hd;
          const AccRows<Acc> qa = acc_rows(qi, qs, rows, hd, q_wide);
          std::fill(row_max.begin(), row_max.end(), -std::numeric_limits<Acc>::infinity());
          std::fill(row_sum.begin(), row_sum.end(), Acc(0));
          std::fill(o_sum.begin(), o_sum.end(), Acc(0));
          for (int j0 = first_key(a, b, i0); j0 < i0 + rows; j0 += kKeyTile) {
            const int cols = std::min(kKeyTile, i0 + rows - j0);
            const AccRows<Acc> ka = acc_rows(kb + size_t(j0) * ks, ks, cols, hd, k_wide);
            const AccRows<Acc> va = acc_rows(vb + size_t(j0) * ks, ks, cols, hd, v_wide);
            acc_gemm(Trans::N, Trans::T, rows, cols, hd, scale, qa.data, qa.stride, ka.data, ka.stride, Acc(0),
                     scores.data(), kKeyTile);
            for (int r = 0; r < rows; ++r) {
              Acc* s = scores.data() + size_t(r) * kKeyTile;  // becomes the row's probabilities
              const Visible vis(first_key(a, b, i0 + r), i0 + r, j0, cols);
              if (vis.empty()) {
                std::fill(s, s + cols, Acc(0));
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
                s[c] = e;
              }
              std::fill(s, s + vis.lo, Acc(0));
              std::fill(s + vis.hi, s + cols, Acc(0));
              row_max[r] = mx;
              row_sum[r] = row_sum[r] * rescale + sum;
              if (rescale != Acc(1))
                for (int c = 0; c < hd; ++c) o_sum[size_t(r) * hd + c] *= rescale;
            }
            acc_gemm(Trans::N, Trans::N, rows, hd, cols, Acc(1), scores.data(), kKeyTile, va.data, va.stride,
                     Acc(1), o_sum.data(), hd);
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
    std::vector<Acc> probs(size_t(kQueryBlock) * kKeyTile);  // [rows, cols], stride kKeyTile
    std::vector<Acc> dprobs(probs.size());                   // their gradient, then dS over it
    std::vector<Acc> dq_sum(size_t(kQueryBlock) * hd);       // [rows, hd]
    std::vector<Acc> row_dot(kQueryBlock);                   // D = rowsum(dO * O)
    std::vector<Acc> q_wide(kMixed ? size_t(kQueryBlock) * hd : 0), dout_wide(q_wide.size());  // under bf16
    std::vector<Acc> k_wide(kMixed ? size_t(kKeyTile) * hd : 0), v_wide(k_wide.size());
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
          const AccRows<Acc> qa = acc_rows(qi, qs, rows, hd, q_wide), doa = acc_rows(doi, qs, rows, hd, dout_wide);
          for (int r = 0; r < rows; ++r) {
            double dot = 0.0;
#pragma omp simd reduction(+ : dot)
            for (int c = 0; c < hd; ++c) dot += double(doi[size_t(r) * qs + c]) * double(oi[size_t(r) * qs + c]);
            row_dot[r] = Acc(dot);
          }
          std::fill(dq_sum.begin(), dq_sum.end(), Acc(0));
          for (int j0 = first_key(a, b, i0); j0 < i0 + rows; j0 += kKeyTile) {
            const int cols = std::min(kKeyTile, i0 + rows - j0);
            const AccRows<Acc> ka = acc_rows(kb + size_t(j0) * ks, ks, cols, hd, k_wide);
            const AccRows<Acc> va = acc_rows(vb + size_t(j0) * ks, ks, cols, hd, v_wide);
            // P = exp(scale Q K^T - lse), 0 where not visible
            acc_gemm(Trans::N, Trans::T, rows, cols, hd, scale, qa.data, qa.stride, ka.data, ka.stride, Acc(0),
                     probs.data(), kKeyTile);
            for (int r = 0; r < rows; ++r) {
              Acc* prow = probs.data() + size_t(r) * kKeyTile;
              const Visible vis(first_key(a, b, i0 + r), i0 + r, j0, cols);
              std::fill(prow, prow + vis.lo, Acc(0));
              for (int c = vis.lo; c < vis.hi; ++c) prow[c] = exp_of(prow[c] - lse_i[r]);
              std::fill(prow + vis.hi, prow + cols, Acc(0));
            }
            // dV += P^T dO;  dP = dO V^T
            acc_gemm(Trans::T, Trans::N, cols, hd, rows, Acc(1), probs.data(), kKeyTile, doa.data, doa.stride, Acc(1),
                     dvb + size_t(j0) * ks, ks);
            acc_gemm(Trans::N, Trans::T, rows, cols, hd, Acc(1), doa.data, doa.stride, va.data, va.stride, Acc(0),
                     dprobs.data(), kKeyTile);
            // softmax backward, scaled: dS = scale P (dP - D); 0 where P is
            for (int r = 0; r < rows; ++r) {
              const Acc* prow = probs.data() + size_t(r) * kKeyTile;
              Acc* dsrow = dprobs.data() + size_t(r) * kKeyTile;  // dS overwrites dP
#pragma omp simd
              for (int c = 0; c < cols; ++c) dsrow[c] = scale * prow[c] * (dsrow[c] - row_dot[r]);
            }
            // scores = scale Q K^T:  dQ += dS K;  dK += dS^T Q
            acc_gemm(Trans::N, Trans::N, rows, hd, cols, Acc(1), dprobs.data(), kKeyTile, ka.data, ka.stride, Acc(1),
                     dq_sum.data(), hd);
            acc_gemm(Trans::T, Trans::N, cols, hd, rows, Acc(1), dprobs.data(), kKeyTile, qa.data, qa.stride, Acc(1),
                     dkb + size_t(j0) * ks, ks);
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
