// The kernel interface. The model and optimizer touch memory only through a
// Backend<T>: the CPU backend fills it with oneDNN, BLAS and OpenMP loops, a
// CUDA backend fills it with cuBLAS and kernels. T is the type weights and
// activations are stored in: float for training, bf16 for mixed precision
// (--bf16), double for the gradient checks, which run the same model code.
// Acc = acc_t<T> (float for bf16, T otherwise) is the type of what must not
// be rounded to T: statistics, router and cross-entropy values, losses,
// parameter gradients and the optimizer's weights and moments. Kernels over
// Acc buffers alone run on acc(), the backend of type Acc on the same device.
//
// Conventions: matrices are row-major; a pointer returned by alloc() lives on
// the backend's device; "host" pointers are ordinary CPU memory. Kernels that
// produce gradients ACCUMULATE (+=) into them (all but the activations'
// gelu_, swiglu_ and sigmoid_backward, which write their scratch), so
// gradient accumulation over micro-batches and residual branches needs no
// extra copies.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>
#include <memory>
#include <type_traits>
#include <utility>
#include <vector>

#include "runtime/bfloat16.h"

namespace mt {

enum class Trans { N, T };

// One product of a grouped gemm (gemm_grouped): op(A) [m, k] times op(B)
// [k, n] into C [m, n], with the group's n, transposes, leading dimensions,
// alpha and beta. The experts of an MoE layer are a group: each its own
// rows and weights.
template <typename T, typename C>
struct GroupMember {
  int m, k;
  const T* a;
  const T* b;
  C* c;
};

// The heads of one attention call, which may be a tensor-parallel share of the
// model's: query head j of the q buffer is the model's head first_head + j
// and reads kv head (first_head + j) / heads_per_kv - first_kv_head of the
// k/v buffers (docs/design.md section 3: query head j reads kv head j / (H / G)).
struct AttentionShape {
  int batch = 1, seq = 1;
  int heads = 1;         // query heads in q
  int kv_heads = 1;      // kv heads in k and v
  int head_dim = 1;
  int first_head = 0;    // model index of q's first head
  int first_kv_head = 0; // model index of k's first head
  int heads_per_kv = 1;  // the model's H / G
  // --reset-attention-mask: doc_start[b * seq + i] is the position in sample
  // b where token i's document begins, and i attends to keys [doc_start, i]
  // only (non-decreasing along a sample). Null: every earlier key.
  const int32_t* doc_start = nullptr;  // [batch * seq], on the device
  // The block form (context parallelism's ring, parallel/ring_attention.h):
  // k and v hold kv_seq rows a sample (0: seq), and the rows of q and of k
  // sit at the positions q_pos [seq] and k_pos [kv_seq] of the whole sample,
  // the same in every sample, each array ascending (null: 0, 1, ...). Query
  // i sees key j when k_pos[j] <= q_pos[i], and k_pos[j] >= doc_start[b *
  // seq + i] under a document mask (doc_start in positions of the whole
  // sample). A row that sees no key of the block gets out = 0, lse = -inf.
  int kv_seq = 0;
  const int32_t* q_pos = nullptr;  // [seq], on the device
  const int32_t* k_pos = nullptr;  // [kv_seq], on the device
  int kv_of(int j) const { return (first_head + j) / heads_per_kv - first_kv_head; }
  int keys() const { return kv_seq > 0 ? kv_seq : seq; }
};

// Rotate-half RoPE over x [batch*seq, heads, head_dim]: row r's pair i is
// turned by position(r) / interpolation * theta^(-2i/head_dim), with
// position(r) = r % seq, less doc_start[r] when given (--reset-position-ids:
// positions restart at each document; AttentionShape::doc_start's array),
// or position[r] when given (generation's rows, each at its own position).
struct RopeShape {
  int batch = 1, seq = 1, heads = 1, head_dim = 2;
  double theta = 10000.0;
  double interpolation = 1.0;          // --rotary-seq-len-interpolation-factor
  const int32_t* doc_start = nullptr;  // [batch * seq], on the device
  const int32_t* position = nullptr;   // [batch * seq], on the device, each below positions
  int positions = 0;                   // with `position`: the context length
};

// One AdamW step's constants (PyTorch's AdamW): bc = 1 - beta^step, and
// the gradients multiplied by grad_scale first (gradient clipping's
// factor, 1 when not clipping), which saves a pass over them.
struct AdamWStep {
  double lr, beta1, beta2, eps, weight_decay, bc1, bc2;
  double grad_scale = 1.0;
};

// Generation's key/value cache of one layer: [sequences, kv_heads,
// positions, head_dim]; sequence s's kv head g at position p is the row
// (s * kv_heads + g) * positions + p. A step's rows are tokens, row i of
// sequence seq[i] at position pos[i] (host-ordered, on the device).
struct KvCacheShape {
  int sequences = 1, kv_heads = 1, positions = 1, head_dim = 1;
};

template <typename T>
class Backend {
 public:
  using Acc = acc_t<T>;
  virtual ~Backend() = default;
  virtual const char* name() const = 0;
  // The library behind the products and how it chose its kernels, for
  // errors and the start-up lines.
  virtual std::string library() const = 0;
  // The backend of type Acc on the same device: *this when Acc is T.
  virtual Backend<Acc>& acc() = 0;

  // --- memory ---------------------------------------------------------------
  virtual T* alloc(size_t n) = 0;  // zero-filled
  virtual int32_t* alloc_int(size_t n) = 0;
  virtual void free(void* p) = 0;
  virtual void to_host(T* host, const T* dev, size_t n) = 0;
  virtual void from_host(T* dev, const T* host, size_t n) = 0;
  virtual void int_from_host(int32_t* dev, const int32_t* host, size_t n) = 0;
  virtual void copy(T* dst, const T* src, size_t n) = 0;
  virtual void fill(T* x, T value, size_t n) = 0;
  // dst = src rounded to T (the master weights into the model's weights).
  virtual void round_from_acc(T* dst, const Acc* src, size_t n) = 0;
  // --grad-reduce-in-bf16: dst = (dst + src) rounded to T, the sum in Acc (a
  // layer's gradients added into the T gradient buffer); and dst = src in
  // Acc (the reduced T shard for the optimizer).
  virtual void add_rounded(T* dst, const Acc* src, size_t n) = 0;
  virtual void widen_to_acc(Acc* dst, const T* src, size_t n) = 0;

  // --- BLAS -------------------------------------------------------------------
  // C[m,n] = alpha * op(A) op(B) + beta * C, op(A) is [m,k], op(B) is [k,n].
  // Products of T accumulate in Acc; gemm rounds C to T, gemm_acc keeps it
  // in Acc (weight gradients, router and vocabulary logits).
  virtual void gemm(Trans ta, Trans tb, int m, int n, int k, T alpha, const T* A, int lda,
                    const T* B, int ldb, T beta, T* C, int ldc) = 0;
  virtual void gemm_acc(Trans ta, Trans tb, int m, int n, int k, Acc alpha, const T* A, int lda,
                        const T* B, int ldb, Acc beta, Acc* C, int ldc) = 0;
  // gemm and gemm_acc over every member of a group at once (Megatron's
  // grouped GEMM, cuBLAS's grouped batched gemm): the same results as one
  // call a member, with the device kept busy across members of any size.
  virtual void gemm_grouped(Trans ta, Trans tb, int n, T alpha, int lda, int ldb, T beta, int ldc,
                            const std::vector<GroupMember<T, T>>& members) = 0;
  virtual void gemm_acc_grouped(Trans ta, Trans tb, int n, Acc alpha, int lda, int ldb, Acc beta, int ldc,
                                const std::vector<GroupMember<T, Acc>>& members) = 0;
  virtual void axpy(size_t n, T alpha, const T* x, T* y) = 0;  // y += alpha x
  virtual void scale(size_t n, T alpha, T* x) = 0;             // x *= alpha
  virtual double sum_squares(size_t n, const T* x) = 0;        // in double for any T

  // --- layers (forward and backward side by side) -----------------------------
  // A vocabulary slice [vocab_start, vocab_start + rows) of the table:
  // out[t] = table[tokens[t] - vocab_start], or 0 for a token outside it;
  // dtable[tokens[t] - vocab_start] += dout[t] for tokens inside. Width d.
  virtual void embedding_forward(T* out, const T* table, const int32_t* tokens, int n, int d,
                                 int vocab_start, int rows) = 0;
  virtual void embedding_backward(Acc* dtable, const T* dout, const int32_t* tokens, int n, int d,
                                  int vocab_start, int rows) = 0;

  // out = x / sqrt(mean(x^2) + eps) * g, row-wise over [n, d]; keeps rstd[n].
  virtual void rmsnorm_forward(T* out, Acc* rstd, const T* x, const T* g, int n, int d, double eps) = 0;
  virtual void rmsnorm_backward(T* dx, Acc* dg, const T* dout, const T* x, const T* g,
                                const Acc* rstd, int n, int d) = 0;

  // RoPE in place (RopeShape); backward applies the inverse rotation to the
  // gradient in place.
  virtual void rope_forward(T* x, const RopeShape& r) = 0;
  virtual void rope_backward(T* dx, const RopeShape& r) = 0;

  // Causal attention. q [B*S, H*hd], k and v [B*S, G*hd], out [B*S, H*hd]
  // (H = a.heads, G = a.kv_heads). Scores are scaled by 1/sqrt(hd). Memory
  // is linear in S: the forward keeps lse [B, H, S], each row's log-sum-exp
  // of its scores, and the backward recomputes the probabilities from it
  // and from out.
  virtual void attention_forward(T* out, Acc* lse, const T* q, const T* k, const T* v,
                                 const AttentionShape& a) = 0;
  virtual void attention_backward(T* dq, T* dk, T* dv, const T* dout, const T* out, const Acc* lse,
                                  const T* q, const T* k, const T* v, const AttentionShape& a) = 0;
  // In the block form (AttentionShape::kv_seq, q_pos, k_pos) k, v, dk and dv
  // are [B*kv_seq, G*hd] and lse [B, H, seq]. attention_backward takes the
  // final out and lse of the query rows (over every block), so that each
  // block's call adds that block's exact share of dq, dk and dv.
  //
  // attention_merge folds one block's result (out_b in T, lse_b) into the
  // running result of the blocks so far (out and lse, both Acc, shapes of
  // a's query rows), row by row:
  //   lse' = log(exp(lse) + exp(lse_b)),
  //   out' = out exp(lse - lse') + out_b exp(lse_b - lse');
  // a row at lse = -inf (no key seen yet) takes the block's values, one at
  // lse_b = -inf stays as it is.
  virtual void attention_merge(Acc* out, Acc* lse, const T* out_b, const Acc* lse_b,
                               const AttentionShape& a) = 0;

  // Generation with a key/value cache over n rows (KvCacheShape): store
  // writes row i of x [n, kv_heads*hd] (k or v after RoPE) at (seq[i],
  // pos[i]) of the cache; decode attends query row i of q [n, H*hd] to
  // positions [0, pos[i]] of its sequence (heads as in AttentionShape, whose
  // batch, seq and doc_start it ignores), out [n, H*hd]. Scores and the
  // softmax are Acc, scaled by 1/sqrt(hd). The rows of one step store
  // before they attend, so a prompt's rows see each other causally.
  virtual void kv_cache_store(T* cache, const T* x, const int32_t* seq, const int32_t* pos, int n,
                              const KvCacheShape& c) = 0;
  virtual void attention_decode(T* out, const T* q, const T* k_cache, const T* v_cache, const int32_t* seq,
                                const int32_t* pos, int n, const AttentionShape& a, const KvCacheShape& c) = 0;

  // GELU, tanh approximation. backward: din = dout * gelu'(in), written,
  // not accumulated: din is always the FFN's own scratch, where zeroing it
  // first would cost a pass over it for nothing.
  virtual void gelu_forward(T* out, const T* in, size_t n) = 0;
  virtual void gelu_backward(T* din, const T* dout, const T* in, size_t n) = 0;
  // SwiGLU (--swiglu): out = silu(gate) * up, silu(x) = x sigmoid(x);
  // backward writes dgate = dout * up * silu'(gate) and dup = dout *
  // silu(gate), as gelu_backward writes.
  virtual void swiglu_forward(T* out, const T* gate, const T* up, size_t n) = 0;
  virtual void swiglu_backward(T* dgate, T* dup, const T* dout, const T* gate, const T* up, size_t n) = 0;
  // y = 1 / (1 + exp(-x)); backward writes dx = dy y (1 - y). (The shared
  // expert's gate, on acc().)
  virtual void sigmoid_forward(T* y, const T* x, size_t n) = 0;
  virtual void sigmoid_backward(T* dx, const T* dy, const T* y, size_t n) = 0;

  // Row-wise softmax of x [n, c] into p; backward: dx += p * (dp - sum(dp * p)).
  // (The router's, on acc().)
  virtual void softmax_forward(T* p, const T* x, int n, int c) = 0;
  virtual void softmax_backward(T* dx, const T* dp, const T* p, int n, int c) = 0;

  // Cross-entropy over logits [n, v] that may be a vocabulary slice starting
  // at vocab_start, in three steps with reductions over the slices between
  // them (vocab_parallel_cross_entropy in parallel/tensor_parallel.cpp), so that the full
  // logits are never gathered:
  //   row_max:    m[i] = max_j logits[i, j]                  (then max over slices)
  //   ce_partials: p[i] = {sum_j exp(logits[i, j] - m[i]),   (then sum over slices)
  //                        logits[i, target - vocab_start] or 0 outside the slice}
  //   ce_finish:  losses[i] = log(p[i].0) + m[i] - p[i].1 when losses is not
  //               null, and dlogits = (softmax - onehot) * dscale when dlogits
  //               is not null (both overwrite).
  // Logits, statistics and losses are Acc (row_max and ce_partials run on
  // acc()); dlogits, which feeds products, is T.
  virtual void row_max(T* m, const T* logits, int n, int v) = 0;
  virtual void ce_partials(T* p, const T* logits, const T* m, const int32_t* targets, int n, int v,
                           int vocab_start) = 0;
  virtual void ce_finish(Acc* losses, T* dlogits, const Acc* logits, const Acc* m, const Acc* p,
                         const int32_t* targets, int n, int v, int vocab_start, double dscale) = 0;

  // Rows for the MoE dispatch: dst[i] = src[idx[i]] over rows of width d;
  // dst[idx[i]] += weight[i] * src[i] (weight null: 1). idx must not repeat
  // in one call, so rows never race. Routing weights are Acc.
  virtual void gather_rows(T* dst, const T* src, const int32_t* idx, int m, int d) = 0;
  virtual void scatter_add_rows(T* dst, const T* src, const int32_t* idx, const Acc* weight, int m,
                                int d) = 0;
  // x[i] *= w[i] for rows of width d.
  virtual void scale_rows(T* x, const Acc* w, int m, int d) = 0;
  // out[i] = dot(a[i], b[i]) for rows of width d.
  virtual void row_dot(Acc* out, const T* a, const T* b, int m, int d) = 0;

  // --- optimizer ----------------------------------------------------------------
  // One AdamW step: g = grad_scale * grad, decoupled decay p -= lr*wd*p,
  // then p -= lr * (m / bc1) / (sqrt(v / bc2) + eps). (On acc(): the
  // optimizer's weights, gradients and moments.)
  virtual void adamw(T* param, const T* grad, T* exp_avg, T* exp_avg_sq, size_t n, const AdamWStep& s) = 0;
};

// The CPU backend: oneDNN and OpenBLAS for products, OpenMP for loops.
template <typename T>
std::unique_ptr<Backend<T>> make_cpu_backend();

// Bytes of every DeviceBuffer of this process alive now: what a rank's
// model holds on its device (the memory lines of `train`, which `plan`
// predicts, read differences of it).
inline std::atomic<int64_t> device_buffer_bytes{0};

// An owned device array of E (T, or int32_t for token and row indices),
// RAII over Backend<T>::alloc.
template <typename T, typename E = T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(Backend<T>& be, size_t n) : be_(&be), n_(n) {
    if constexpr (std::is_same_v<E, int32_t>) {
      ptr_ = n ? be.alloc_int(n) : nullptr;
    } else {
      ptr_ = n ? be.alloc(n) : nullptr;
    }
    device_buffer_bytes += int64_t(n * sizeof(E));
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept { swap(o); }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    DeviceBuffer tmp(std::move(o));
    swap(tmp);
    return *this;
  }
  ~DeviceBuffer() {
    if (ptr_) be_->free(ptr_);
    device_buffer_bytes -= int64_t(n_ * sizeof(E));
  }
  E* data() { return ptr_; }
  const E* data() const { return ptr_; }
  size_t size() const { return n_; }

 private:
  void swap(DeviceBuffer& o) noexcept {
    std::swap(be_, o.be_);
    std::swap(n_, o.n_);
    std::swap(ptr_, o.ptr_);
  }
  Backend<T>* be_ = nullptr;
  size_t n_ = 0;
  E* ptr_ = nullptr;
};

}  // namespace mt
