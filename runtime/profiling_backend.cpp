#include "runtime/profiling_backend.h"

#include <numeric>
#include <variant>

namespace mt {

const char* op_kind_text(OpKind k) {
  static constexpr const char* kText[] = {
#define MT_OP_KIND_TEXT(name, text) text,
      MT_OP_KINDS(MT_OP_KIND_TEXT)
#undef MT_OP_KIND_TEXT
  };
  return kText[int(k)];
}

double OpTimes::total() const { return std::accumulate(seconds.begin(), seconds.end(), 0.0); }

namespace {

// Adds the seconds of its scope to one kind.
class ScopedOp {
 public:
  ScopedOp(OpTimes& times, OpKind kind) : times_(times), kind_(kind), start_(std::chrono::steady_clock::now()) {}
  ~ScopedOp() {
    times_.seconds[int(kind_)] += std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    times_.calls[int(kind_)] += 1;
  }

 private:
  OpTimes& times_;
  OpKind kind_;
  std::chrono::steady_clock::time_point start_;
};

#define MT_TIMED(kind, call)               \
  ScopedOp timed_op(times_, OpKind::kind); \
  return inner_->call

template <typename T>
class ProfilingBackend final : public Backend<T> {
 public:
  using Acc = acc_t<T>;
  // owned: the wrapped backend, or null when it belongs to another (acc()).
  ProfilingBackend(Backend<T>& inner, std::unique_ptr<Backend<T>> owned, OpTimes& times)
      : inner_(&inner), owned_(std::move(owned)), times_(times) {
    if constexpr (!std::is_same_v<T, Acc>) acc_ = std::make_unique<ProfilingBackend<Acc>>(inner.acc(), nullptr, times);
  }

  const char* name() const override { return inner_->name(); }
  std::string library() const override { return inner_->library(); }
  Backend<Acc>& acc() override {
    if constexpr (std::is_same_v<T, Acc>) {
      return *this;
    } else {
      return *acc_;
    }
  }

  T* alloc(size_t n) override { MT_TIMED(Elementwise, alloc(n)); }
  int32_t* alloc_int(size_t n) override { MT_TIMED(Elementwise, alloc_int(n)); }
  void free(void* p) override { MT_TIMED(Elementwise, free(p)); }
  void to_host(T* host, const T* dev, size_t n) override { MT_TIMED(Elementwise, to_host(host, dev, n)); }
  void from_host(T* dev, const T* host, size_t n) override { MT_TIMED(Elementwise, from_host(dev, host, n)); }
  void int_from_host(int32_t* dev, const int32_t* host, size_t n) override {
    MT_TIMED(Elementwise, int_from_host(dev, host, n));
  }
  void copy(T* dst, const T* src, size_t n) override { MT_TIMED(Elementwise, copy(dst, src, n)); }
  void fill(T* x, T value, size_t n) override { MT_TIMED(Elementwise, fill(x, value, n)); }
  void round_from_acc(T* dst, const Acc* src, size_t n) override { MT_TIMED(Optimizer, round_from_acc(dst, src, n)); }
  void add_rounded(T* dst, const Acc* src, size_t n) override { MT_TIMED(Optimizer, add_rounded(dst, src, n)); }
  void widen_to_acc(Acc* dst, const T* src, size_t n) override { MT_TIMED(Optimizer, widen_to_acc(dst, src, n)); }

  void gemm(Trans ta, Trans tb, int m, int n, int k, T alpha, const T* A, int lda, const T* B, int ldb, T beta, T* C,
            int ldc) override {
    MT_TIMED(Products, gemm(ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc));
  }
  void gemm_acc(Trans ta, Trans tb, int m, int n, int k, Acc alpha, const T* A, int lda, const T* B, int ldb, Acc beta,
                Acc* C, int ldc) override {
    MT_TIMED(Products, gemm_acc(ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc));
  }
  void gemm_grouped(Trans ta, Trans tb, int n, T alpha, int lda, int ldb, T beta, int ldc,
                    const std::vector<GroupMember<T, T>>& members) override {
    MT_TIMED(Products, gemm_grouped(ta, tb, n, alpha, lda, ldb, beta, ldc, members));
  }
  void gemm_acc_grouped(Trans ta, Trans tb, int n, Acc alpha, int lda, int ldb, Acc beta, int ldc,
                        const std::vector<GroupMember<T, Acc>>& members) override {
    MT_TIMED(Products, gemm_acc_grouped(ta, tb, n, alpha, lda, ldb, beta, ldc, members));
  }
  void axpy(size_t n, T alpha, const T* x, T* y) override { MT_TIMED(Elementwise, axpy(n, alpha, x, y)); }
  void scale(size_t n, T alpha, T* x) override { MT_TIMED(Optimizer, scale(n, alpha, x)); }
  double sum_squares(size_t n, const T* x) override { MT_TIMED(Optimizer, sum_squares(n, x)); }

  void embedding_forward(T* out, const T* table, const int32_t* tokens, int n, int d, int vocab_start,
                         int rows) override {
    MT_TIMED(Embedding, embedding_forward(out, table, tokens, n, d, vocab_start, rows));
  }
  void embedding_backward(Acc* dtable, const T* dout, const int32_t* tokens, int n, int d, int vocab_start,
                          int rows) override {
    MT_TIMED(Embedding, embedding_backward(dtable, dout, tokens, n, d, vocab_start, rows));
  }
  void rmsnorm_forward(T* out, Acc* rstd, const T* x, const T* g, int n, int d, double eps) override {
    MT_TIMED(Norms, rmsnorm_forward(out, rstd, x, g, n, d, eps));
  }
  void rmsnorm_backward(T* dx, Acc* dg, const T* dout, const T* x, const T* g, const Acc* rstd, int n,
                        int d) override {
    MT_TIMED(Norms, rmsnorm_backward(dx, dg, dout, x, g, rstd, n, d));
  }
  void rope_forward(T* x, const RopeShape& r) override { MT_TIMED(Rope, rope_forward(x, r)); }
  void rope_backward(T* dx, const RopeShape& r) override { MT_TIMED(Rope, rope_backward(dx, r)); }
  void attention_forward(T* out, Acc* lse, const T* q, const T* k, const T* v, const AttentionShape& a) override {
    MT_TIMED(Attention, attention_forward(out, lse, q, k, v, a));
  }
  void attention_backward(T* dq, T* dk, T* dv, const T* dout, const T* out, const Acc* lse, const T* q, const T* k,
                          const T* v, const AttentionShape& a) override {
    MT_TIMED(Attention, attention_backward(dq, dk, dv, dout, out, lse, q, k, v, a));
  }
  void attention_merge(Acc* out, Acc* lse, const T* out_b, const Acc* lse_b, const AttentionShape& a) override {
    MT_TIMED(Attention, attention_merge(out, lse, out_b, lse_b, a));
  }
  void kv_cache_store(T* cache, const T* x, const int32_t* seq, const int32_t* pos, int n,
                      const KvCacheShape& c) override {
    MT_TIMED(Attention, kv_cache_store(cache, x, seq, pos, n, c));
  }
  void attention_decode(T* out, const T* q, const T* k_cache, const T* v_cache, const int32_t* seq,
                        const int32_t* pos, int n, const AttentionShape& a, const KvCacheShape& c) override {
    MT_TIMED(Attention, attention_decode(out, q, k_cache, v_cache, seq, pos, n, a, c));
  }
  void gelu_forward(T* out, const T* in, size_t n) override { MT_TIMED(Activation, gelu_forward(out, in, n)); }
  void gelu_backward(T* din, const T* dout, const T* in, size_t n) override {
    MT_TIMED(Activation, gelu_backward(din, dout, in, n));
  }
  void swiglu_forward(T* out, const T* gate, const T* up, size_t n) override {
    MT_TIMED(Activation, swiglu_forward(out, gate, up, n));
  }
  void swiglu_backward(T* dgate, T* dup, const T* dout, const T* gate, const T* up, size_t n) override {
    MT_TIMED(Activation, swiglu_backward(dgate, dup, dout, gate, up, n));
  }
  void sigmoid_forward(T* y, const T* x, size_t n) override { MT_TIMED(Dispatch, sigmoid_forward(y, x, n)); }
  void sigmoid_backward(T* dx, const T* dy, const T* y, size_t n) override {
    MT_TIMED(Dispatch, sigmoid_backward(dx, dy, y, n));
  }
  void softmax_forward(T* p, const T* x, int n, int c) override { MT_TIMED(Dispatch, softmax_forward(p, x, n, c)); }
  void softmax_backward(T* dx, const T* dp, const T* p, int n, int c) override {
    MT_TIMED(Dispatch, softmax_backward(dx, dp, p, n, c));
  }
  void row_max(T* m, const T* logits, int n, int v) override { MT_TIMED(CrossEntropy, row_max(m, logits, n, v)); }
  void ce_partials(T* p, const T* logits, const T* m, const int32_t* targets, int n, int v,
                   int vocab_start) override {
    MT_TIMED(CrossEntropy, ce_partials(p, logits, m, targets, n, v, vocab_start));
  }
  void ce_finish(Acc* losses, T* dlogits, const Acc* logits, const Acc* m, const Acc* p, const int32_t* targets,
                 int n, int v, int vocab_start, double dscale) override {
    MT_TIMED(CrossEntropy, ce_finish(losses, dlogits, logits, m, p, targets, n, v, vocab_start, dscale));
  }
  void gather_rows(T* dst, const T* src, const int32_t* idx, int m, int d) override {
    MT_TIMED(Dispatch, gather_rows(dst, src, idx, m, d));
  }
  void scatter_add_rows(T* dst, const T* src, const int32_t* idx, const Acc* weight, int m, int d) override {
    MT_TIMED(Dispatch, scatter_add_rows(dst, src, idx, weight, m, d));
  }
  void scale_rows(T* x, const Acc* w, int m, int d) override { MT_TIMED(Dispatch, scale_rows(x, w, m, d)); }
  void row_dot(Acc* out, const T* a, const T* b, int m, int d) override {
    MT_TIMED(Dispatch, row_dot(out, a, b, m, d));
  }
  void adamw(T* param, const T* grad, T* exp_avg, T* exp_avg_sq, size_t n, const AdamWStep& s) override {
    MT_TIMED(Optimizer, adamw(param, grad, exp_avg, exp_avg_sq, n, s));
  }

 private:
  Backend<T>* inner_;
  std::unique_ptr<Backend<T>> owned_;
  OpTimes& times_;
  std::conditional_t<std::is_same_v<T, Acc>, std::monostate, std::unique_ptr<ProfilingBackend<Acc>>> acc_;
};

#undef MT_TIMED

}  // namespace

template <typename T>
std::unique_ptr<Backend<T>> make_profiling_backend(std::unique_ptr<Backend<T>> inner, OpTimes& times) {
  Backend<T>& ref = *inner;
  return std::make_unique<ProfilingBackend<T>>(ref, std::move(inner), times);
}

template std::unique_ptr<Backend<float>> make_profiling_backend(std::unique_ptr<Backend<float>>, OpTimes&);
template std::unique_ptr<Backend<double>> make_profiling_backend(std::unique_ptr<Backend<double>>, OpTimes&);
template std::unique_ptr<Backend<bf16>> make_profiling_backend(std::unique_ptr<Backend<bf16>>, OpTimes&);

}  // namespace mt
