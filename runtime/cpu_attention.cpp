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
// The query heads that share a key/value head share its tiles: a query
// block stacks the rows of a few tokens for all of them (token-major), so
// that under multi-query attention one tile product serves 8 heads at once
// where it would take 8 smaller calls.
//
// Work is split over (sample, key/value head, query block), dealt to the
// threads in a snake so that the short blocks near the start and the long
// ones near the end share out evenly. A query block owns its rows of out
// and dq; the key and value gradients, which every later block adds to, are
// summed per thread and then over the threads in thread order, so that a
// run is deterministic for a given thread count.
//
// The block form (AttentionShape::kv_seq, q_pos, k_pos: one step of
// context parallelism's ring) is the same loops over key rows that are not
// the query rows: the mask compares positions in the whole sample instead of
// row indices, a query block's key range and each row's visible columns are
// found by binary search in the ascending key positions, and a tile that no
// row of the block sees (in the gap between a rank's two chunks) is skipped.
// Without positions every formula reduces to the plain one, bit for bit.
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

// A query block stacks about kQueryRows rows (tokens x the key/value head's
// query heads, at most kMaxBlockTokens tokens) against key tiles of
// kKeyTile columns: a block's scores, [256, 128] in float32, stay in the L2
// cache, and each library call is long enough to amortize its set-up.
constexpr int kQueryRows = 256, kMaxBlockTokens = 64, kKeyTile = 128;

// The position in the whole sample of query row i: the block form's, or
// the row's own index.
int query_pos(const AttentionShape& a, int i) { return a.q_pos ? a.q_pos[i] : i; }

// The first key position query row i of sample b may attend to.
int first_key(const AttentionShape& a, int b, int i) {
  return a.doc_start ? a.doc_start[size_t(b) * a.seq + i] : 0;
}

// The key columns [lo, hi) of a tile of `cols` keys from key row j0 that a
// query at position p may attend to: keys at positions [first, p];
// 0 <= lo <= hi <= cols. Key positions ascend, so in the block form the
// bounds are binary searches in the tile's positions.
struct Visible {
  int lo, hi;
  Visible(const AttentionShape& a, int first, int p, int j0, int cols) {
    if (!a.k_pos) {
      lo = std::clamp(first - j0, 0, cols);
      hi = std::clamp(p - j0 + 1, lo, cols);
    } else {
      const int32_t* t = a.k_pos + j0;
      lo = int(std::lower_bound(t, t + cols, first) - t);
      hi = std::max(lo, int(std::upper_bound(t, t + cols, p) - t));
    }
  }
  bool empty() const { return lo == hi; }
};

// The local query heads of local key/value head g: [first[g], first[g + 1]),
// consecutive because kv_of does not decrease.
std::vector<int> query_heads_of_kv(const AttentionShape& a) {
  std::vector<int> first(a.kv_heads + 1, 0);
  for (int h = 0; h < a.heads; ++h) ++first[a.kv_of(h) + 1];
  for (int g = 0; g < a.kv_heads; ++g) first[g + 1] += first[g];
  return first;
}

// Tokens a query block, and its most rows: kQueryRows rows for the largest
// head group (more when that group alone has more heads).
struct BlockSize {
  int tokens, rows;
};
BlockSize block_size(const std::vector<int>& first) {
  int most = 1;
  for (size_t g = 0; g + 1 < first.size(); ++g) most = std::max(most, first[g + 1] - first[g]);
  const int tokens = std::clamp(kQueryRows / most, 1, kMaxBlockTokens);
  return {tokens, tokens * most};
}

// One query block: `tokens` tokens from sample position i0, query heads
// [h0, h0 + hn) of key/value head g. Row r is token i0 + r / hn, head
// h0 + r % hn.
struct QueryBlock {
  int b, g, i0, tokens, h0, hn;
  int rows() const { return tokens * hn; }
  int token(int r) const { return i0 + r / hn; }
  int head(int r) const { return h0 + r % hn; }
  // Offset of row r in an [B*S, heads*hd] tensor of row stride `stride`.
  size_t offset(int r, int seq, int hd, int stride) const {
    return (size_t(b) * seq + token(r)) * stride + size_t(head(r)) * hd;
  }
  // Offset of the block's key/value head, key 0, in an [B*keys, G*hd]
  // tensor of row stride `stride`.
  size_t kv_offset(int keys, int hd, int stride) const { return size_t(b) * keys * stride + size_t(g) * hd; }
};

// The key rows [begin, end) a query block may see: from the first key at
// or after its first row's document start (document starts do not
// decrease along the rows) to the last key at or before its last row.
// Plain form: [doc_start of row i0, i0 + tokens), the causal triangle.
struct KeyRange {
  int begin, end;
};
KeyRange key_range(const AttentionShape& a, const QueryBlock& qb) {
  const int first = first_key(a, qb.b, qb.i0), last = query_pos(a, qb.i0 + qb.tokens - 1), n = a.keys();
  if (!a.k_pos) {
    const int begin = std::clamp(first, 0, n);
    return {begin, std::clamp(last + 1, begin, n)};
  }
  const int begin = int(std::lower_bound(a.k_pos, a.k_pos + n, first) - a.k_pos);
  return {begin, std::max(begin, int(std::upper_bound(a.k_pos, a.k_pos + n, last) - a.k_pos))};
}

// Whether some row of the block sees a key of the tile [j0, j0 + cols).
// Only the block form can miss: its key range may span the gap between two
// chunks of the queries (a rank's chunks i and 2 CP - 1 - i), and a later
// row's document may start past the tile. In the plain form every tile of
// the range is seen (the first row sees from its document's start to
// itself, and every later key is seen by its own row).
bool tile_seen(const AttentionShape& a, const QueryBlock& qb, int j0, int cols) {
  if (!a.q_pos && !a.k_pos) return true;
  for (int i = qb.i0; i < qb.i0 + qb.tokens; ++i)
    if (!Visible(a, first_key(a, qb.b, i), query_pos(a, i), j0, cols).empty()) return true;
  return false;
}

// The thread that work item `item` goes to: items are dealt 0, 1, ...,
// T-1, T-1, ..., 1, 0, 0, 1, ..., so that when their cost grows along the
// list (query blocks later in the sample see more keys) each thread gets a
// like share, and a given thread count always deals the same way.
int dealt_to(int item, int threads) {
  const int round = item / threads, seat = item % threads;
  return round % 2 ? threads - 1 - seat : seat;
}

// Work item `item` of (sample, key/value head, query block), the query
// block fastest.
QueryBlock query_block(int item, int blocks, int tokens, const AttentionShape& a, const std::vector<int>& heads_of) {
  const int blk = item % blocks, g = item / blocks % a.kv_heads, b = item / blocks / a.kv_heads;
  const int i0 = blk * tokens;
  return {b, g, i0, std::min(tokens, a.seq - i0), heads_of[g], heads_of[g + 1] - heads_of[g]};
}

// Inside a parallel region: f(qb) for each query block with rows that this
// thread is dealt.
template <typename F>
void for_each_dealt_block(const AttentionShape& a, int blocks, int tokens, const std::vector<int>& heads_of, F f) {
  const int threads = omp_get_num_threads(), thread = omp_get_thread_num();
  for (int item = 0; item < a.batch * a.kv_heads * blocks; ++item) {
    if (dealt_to(item, threads) != thread) continue;
    const QueryBlock qb = query_block(item, blocks, tokens, a, heads_of);
    if (qb.rows() > 0) f(qb);
  }
}

// The block's rows of x [B*S, heads*hd] as a compact Acc [rows, hd]; a
// token's heads are contiguous in x.
template <typename T, typename Acc>
void gather_block(Acc* dst, const T* x, const QueryBlock& qb, int seq, int hd, int stride) {
  for (int t = 0; t < qb.tokens; ++t) {
    const T* src = x + qb.offset(t * qb.hn, seq, hd, stride);
    Acc* d = dst + size_t(t) * qb.hn * hd;
    for (int e = 0; e < qb.hn * hd; ++e) d[e] = Acc(src[e]);
  }
}

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

// A block's rows for the backward pass: D = rowsum(dO * O) (in double),
// from dO widened exactly into dout_block, and each row's log-sum-exp.
template <typename T, typename Acc>
void backward_row_stats(const QueryBlock& qb, const Acc* dout_block, const T* out, const Acc* lse, int S, int H,
                        int hd, Acc* row_dot, Acc* row_lse) {
  const int qs = H * hd;
  for (int r = 0; r < qb.rows(); ++r) {
    const Acc* dor = dout_block + size_t(r) * hd;
    const T* orow = out + qb.offset(r, S, hd, qs);
    double dot = 0.0;
#pragma omp simd reduction(+ : dot)
    for (int c = 0; c < hd; ++c) dot += double(dor[c]) * double(orow[c]);
    row_dot[r] = Acc(dot);
    row_lse[r] = lse[(size_t(qb.b) * H + qb.head(r)) * S + qb.token(r)];
  }
}

}  // namespace

template <typename T>
void CpuBackend<T>::attention_forward(T* out, Acc* lse, const T* q, const T* k, const T* v,
                                      const AttentionShape& a) {
  const int S = a.seq, SK = a.keys(), H = a.heads, G = a.kv_heads, hd = a.head_dim;
  const int qs = H * hd, ks = G * hd;  // row strides of q/out and of k/v
  const std::vector<int> heads_of = query_heads_of_kv(a);
  const BlockSize size = block_size(heads_of);
  const int tokens = size.tokens, max_rows = size.rows, blocks = (S + tokens - 1) / tokens;
  const Acc scale = Acc(1.0 / std::sqrt(double(hd)));
  constexpr Acc kMinusInf = -std::numeric_limits<Acc>::infinity();
#pragma omp parallel
  {
    // [rows, cols], stride kKeyTile; the probabilities overwrite their scores
    std::vector<Acc> scores(size_t(max_rows) * kKeyTile);
    std::vector<Acc> o_sum(size_t(max_rows) * hd);  // [rows, hd] running sum of p v
    std::vector<Acc> q_block(size_t(max_rows) * hd);
    std::vector<Acc> k_wide(kMixed ? size_t(kKeyTile) * hd : 0), v_wide(k_wide.size());  // under bf16
    std::vector<Acc> row_max(max_rows), row_sum(max_rows);
    for_each_dealt_block(a, blocks, tokens, heads_of, [&](const QueryBlock& qb) {
      const int rows = qb.rows(), b = qb.b;
      const size_t kv = qb.kv_offset(SK, hd, ks);
      const T *kb = k + kv, *vb = v + kv;  // [SK, hd], stride ks
      gather_block(q_block.data(), q, qb, S, hd, qs);
      std::fill(row_max.begin(), row_max.end(), kMinusInf);
      std::fill(row_sum.begin(), row_sum.end(), Acc(0));
      std::fill(o_sum.begin(), o_sum.end(), Acc(0));
      const KeyRange keys = key_range(a, qb);
      for (int j0 = keys.begin; j0 < keys.end; j0 += kKeyTile) {
        const int cols = std::min(kKeyTile, keys.end - j0);
        if (!tile_seen(a, qb, j0, cols)) continue;
        const AccRows<Acc> ka = acc_rows(kb + size_t(j0) * ks, ks, cols, hd, k_wide);
        const AccRows<Acc> va = acc_rows(vb + size_t(j0) * ks, ks, cols, hd, v_wide);
        acc_gemm(Trans::N, Trans::T, rows, cols, hd, scale, q_block.data(), hd, ka.data, ka.stride, Acc(0),
                 scores.data(), kKeyTile);
        for (int r = 0; r < rows; ++r) {
          Acc* s = scores.data() + size_t(r) * kKeyTile;  // becomes the row's probabilities
          const int i = qb.token(r);
          const Visible vis(a, first_key(a, b, i), query_pos(a, i), j0, cols);
          if (vis.empty()) {
            std::fill(s, s + cols, Acc(0));
            continue;
          }
          // The loops run over the whole tile, the hidden columns set to
          // -inf and then 0, so that they vectorize without a scalar
          // remainder for each row.
          std::fill(s, s + vis.lo, kMinusInf);
          std::fill(s + vis.hi, s + cols, kMinusInf);
          const Acc old_max = row_max[r];
          Acc mx = old_max;
#pragma omp simd reduction(max : mx)
          for (int c = 0; c < cols; ++c) mx = s[c] > mx ? s[c] : mx;  // std::max would stay scalar
#pragma omp simd
          for (int c = 0; c < cols; ++c) s[c] = exp_of(s[c] - mx);
          std::fill(s, s + vis.lo, Acc(0));
          std::fill(s + vis.hi, s + cols, Acc(0));
          Acc sum = 0;
#pragma omp simd reduction(+ : sum)
          for (int c = 0; c < cols; ++c) sum += s[c];
          // The sums so far were taken against the old maximum (a row with
          // nothing visible yet has sums of 0 and needs none).
          if (mx != old_max && row_sum[r] != Acc(0)) {
            const Acc rescale = exp_of(old_max - mx);
            row_sum[r] *= rescale;
            for (int c = 0; c < hd; ++c) o_sum[size_t(r) * hd + c] *= rescale;
          }
          row_max[r] = mx;
          row_sum[r] += sum;
        }
        acc_gemm(Trans::N, Trans::N, rows, hd, cols, Acc(1), scores.data(), kKeyTile, va.data, va.stride,
                 Acc(1), o_sum.data(), hd);
      }
      for (int r = 0; r < rows; ++r) {
        T* orow = out + qb.offset(r, S, hd, qs);
        Acc& row_lse = lse[(size_t(b) * H + qb.head(r)) * S + qb.token(r)];
        if (row_sum[r] == Acc(0)) {  // the block form: no key of this block is visible
          std::fill(orow, orow + hd, T(0));
          row_lse = kMinusInf;
          continue;
        }
        const Acc inv = Acc(1) / row_sum[r];
        for (int c = 0; c < hd; ++c) orow[c] = T(o_sum[size_t(r) * hd + c] * inv);
        row_lse = row_max[r] + std::log(row_sum[r]);
      }
    });
  }
}

template <typename T>
void CpuBackend<T>::attention_backward(T* dq, T* dk, T* dv, const T* dout, const T* out, const Acc* lse,
                                       const T* q, const T* k, const T* v, const AttentionShape& a) {
  const int B = a.batch, S = a.seq, SK = a.keys(), H = a.heads, G = a.kv_heads, hd = a.head_dim;
  const int qs = H * hd, ks = G * hd;
  const std::vector<int> heads_of = query_heads_of_kv(a);
  const BlockSize size = block_size(heads_of);
  const int tokens = size.tokens, max_rows = size.rows, blocks = (S + tokens - 1) / tokens;
  const size_t kv_size = size_t(B) * SK * ks;
  const Acc scale = Acc(1.0 / std::sqrt(double(hd)));
  dk_of_thread_.resize(std::max<size_t>(dk_of_thread_.size(), omp_get_max_threads()));
  dv_of_thread_.resize(dk_of_thread_.size());
#pragma omp parallel
  {
    // [B*SK, G*hd] this thread's share; the first kv_size elements in use
    std::vector<Acc>& dk_sum = dk_of_thread_[omp_get_thread_num()];
    std::vector<Acc>& dv_sum = dv_of_thread_[omp_get_thread_num()];
    dk_sum.resize(std::max(dk_sum.size(), kv_size));
    dv_sum.resize(dk_sum.size());
    std::fill_n(dk_sum.begin(), kv_size, Acc(0));
    std::fill_n(dv_sum.begin(), kv_size, Acc(0));
    std::vector<Acc> probs(size_t(max_rows) * kKeyTile);  // [rows, cols], stride kKeyTile
    std::vector<Acc> dprobs(probs.size());                   // their gradient, then dS over it
    std::vector<Acc> dq_sum(size_t(max_rows) * hd);       // [rows, hd]
    std::vector<Acc> row_dot(max_rows), row_lse(max_rows);  // D = rowsum(dO * O); the rows' lse
    std::vector<Acc> q_block(size_t(max_rows) * hd), dout_block(q_block.size());
    std::vector<Acc> k_wide(kMixed ? size_t(kKeyTile) * hd : 0), v_wide(k_wide.size());  // under bf16
    for_each_dealt_block(a, blocks, tokens, heads_of, [&](const QueryBlock& qb) {
      const int rows = qb.rows(), b = qb.b;
      const size_t kv = qb.kv_offset(SK, hd, ks);
      const T *kb = k + kv, *vb = v + kv;  // [SK, hd], stride ks
      Acc *dkb = dk_sum.data() + kv, *dvb = dv_sum.data() + kv;
      gather_block(q_block.data(), q, qb, S, hd, qs);
      gather_block(dout_block.data(), dout, qb, S, hd, qs);
      backward_row_stats(qb, dout_block.data(), out, lse, S, H, hd, row_dot.data(), row_lse.data());
      std::fill(dq_sum.begin(), dq_sum.end(), Acc(0));
      const KeyRange keys = key_range(a, qb);
      for (int j0 = keys.begin; j0 < keys.end; j0 += kKeyTile) {
        const int cols = std::min(kKeyTile, keys.end - j0);
        if (!tile_seen(a, qb, j0, cols)) continue;
        const AccRows<Acc> ka = acc_rows(kb + size_t(j0) * ks, ks, cols, hd, k_wide);
        const AccRows<Acc> va = acc_rows(vb + size_t(j0) * ks, ks, cols, hd, v_wide);
        // P = exp(scale Q K^T - lse), 0 where not visible
        acc_gemm(Trans::N, Trans::T, rows, cols, hd, scale, q_block.data(), hd, ka.data, ka.stride, Acc(0),
                 probs.data(), kKeyTile);
        for (int r = 0; r < rows; ++r) {
          Acc* prow = probs.data() + size_t(r) * kKeyTile;
          const int i = qb.token(r);
          const Visible vis(a, first_key(a, b, i), query_pos(a, i), j0, cols);
          // over the whole tile, then the hidden columns zeroed: no scalar
          // remainder for each row
#pragma omp simd
          for (int c = 0; c < cols; ++c) prow[c] = exp_of(prow[c] - row_lse[r]);
          std::fill(prow, prow + vis.lo, Acc(0));
          std::fill(prow + vis.hi, prow + cols, Acc(0));
        }
        // dV += P^T dO;  dP = dO V^T
        acc_gemm(Trans::T, Trans::N, cols, hd, rows, Acc(1), probs.data(), kKeyTile, dout_block.data(), hd,
                 Acc(1), dvb + size_t(j0) * ks, ks);
        acc_gemm(Trans::N, Trans::T, rows, cols, hd, Acc(1), dout_block.data(), hd, va.data, va.stride, Acc(0),
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
        acc_gemm(Trans::T, Trans::N, cols, hd, rows, Acc(1), dprobs.data(), kKeyTile, q_block.data(), hd, Acc(1),
                 dkb + size_t(j0) * ks, ks);
      }
      for (int r = 0; r < rows; ++r) {
        T* dqrow = dq + qb.offset(r, S, hd, qs);
        for (int c = 0; c < hd; ++c) dqrow[c] = T(Acc(dqrow[c]) + dq_sum[size_t(r) * hd + c]);
      }
    });
    // The threads' key and value gradients, summed in thread order once
    // every thread has added its share.
    const int team = omp_get_num_threads();  // this call's threads, each of which zeroed its sums above
#pragma omp barrier
#pragma omp for schedule(static)
    for (size_t e = 0; e < kv_size; ++e) {
      Acc dk_e = dk[e], dv_e = dv[e];
      for (int t = 0; t < team; ++t) {
        dk_e += dk_of_thread_[t][e];
        dv_e += dv_of_thread_[t][e];
      }
      dk[e] = T(dk_e);
      dv[e] = T(dv_e);
    }
  }
}

// Row by row (a token's query heads, each hd wide); the weights from the
// two log-sum-exps in double, so that the merged output is rounded only in
// its own two products and sum.
template <typename T>
void CpuBackend<T>::attention_merge(Acc* out, Acc* lse, const T* out_b, const Acc* lse_b, const AttentionShape& a) {
  const int S = a.seq, H = a.heads, hd = a.head_dim;
  const long rows = long(a.batch) * S;
  constexpr Acc kMinusInf = -std::numeric_limits<Acc>::infinity();
#pragma omp parallel for schedule(static)
  for (long row = 0; row < rows; ++row) {
    const long b = row / S, i = row % S;
    for (int h = 0; h < H; ++h) {
      const size_t at = size_t(b * H + h) * S + size_t(i);
      Acc* o = out + (size_t(row) * H + h) * hd;
      const T* ob = out_b + (size_t(row) * H + h) * hd;
      const Acc lb = lse_b[at];
      if (lb == kMinusInf) continue;  // the block saw nothing for this row
      if (lse[at] == kMinusInf) {     // nothing before it: the block's values
        for (int c = 0; c < hd; ++c) o[c] = Acc(ob[c]);
        lse[at] = lb;
        continue;
      }
      const double l = double(lse[at]), m = std::max(l, double(lb));
      const double merged = m + std::log1p(std::exp(-std::abs(l - double(lb))));
      const Acc wa = Acc(std::exp(l - merged)), wb = Acc(std::exp(double(lb) - merged));
#pragma omp simd
      for (int c = 0; c < hd; ++c) o[c] = o[c] * wa + Acc(ob[c]) * wb;
      lse[at] = Acc(merged);
    }
  }
}

template class CpuBackend<float>;
template class CpuBackend<double>;
template class CpuBackend<bf16>;

}  // namespace mt
