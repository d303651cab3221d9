// The CPU backend: oneDNN for float32 matrix products, OpenBLAS for float64
// ones, and OpenMP loops for everything else; all three on the one OpenMP
// runtime (libgomp), so that one thread pool serves them.
#pragma once

#include "runtime/backend.h"

namespace mt {

template <typename T>
class CpuBackend final : public Backend<T> {
 public:
  const char* name() const override { return "cpu"; }
  std::string library() const override;

  T* alloc(size_t n) override;
  int32_t* alloc_int(size_t n) override;
  void free(void* p) override;
  void to_host(T* host, const T* dev, size_t n) override;
  void from_host(T* dev, const T* host, size_t n) override;
  void int_from_host(int32_t* dev, const int32_t* host, size_t n) override;
  void copy(T* dst, const T* src, size_t n) override;
  void fill(T* x, T value, size_t n) override;

  void gemm(Trans ta, Trans tb, int m, int n, int k, T alpha, const T* A, int lda, const T* B,
            int ldb, T beta, T* C, int ldc) override;
  void axpy(size_t n, T alpha, const T* x, T* y) override;
  void scale(size_t n, T alpha, T* x) override;
  double sum_squares(size_t n, const T* x) override;

  void embedding_forward(T* out, const T* table, const int32_t* tokens, int n, int d,
                         int vocab_start, int rows) override;
  void embedding_backward(T* dtable, const T* dout, const int32_t* tokens, int n, int d,
                          int vocab_start, int rows) override;
  void rmsnorm_forward(T* out, T* rstd, const T* x, const T* g, int n, int d, T eps) override;
  void rmsnorm_backward(T* dx, T* dg, const T* dout, const T* x, const T* g, const T* rstd, int n,
                        int d) override;
  void rope_forward(T* x, int batch, int seq, int heads, int hd, T theta) override;
  void rope_backward(T* dx, int batch, int seq, int heads, int hd, T theta) override;
  void attention_forward(T* out, T* probs, const T* q, const T* k, const T* v,
                         const AttentionShape& a) override;
  void attention_backward(T* dq, T* dk, T* dv, const T* dout, const T* probs, const T* q,
                          const T* k, const T* v, const AttentionShape& a) override;
  void gelu_forward(T* out, const T* in, size_t n) override;
  void gelu_backward(T* din, const T* dout, const T* in, size_t n) override;
  void softmax_forward(T* p, const T* x, int n, int c) override;
  void softmax_backward(T* dx, const T* dp, const T* p, int n, int c) override;
  void row_max(T* m, const T* logits, int n, int v) override;
  void ce_partials(T* p, const T* logits, const T* m, const int32_t* targets, int n, int v,
                   int vocab_start) override;
  void ce_finish(T* losses, T* dlogits, const T* logits, const T* m, const T* p,
                 const int32_t* targets, int n, int v, int vocab_start, T dscale) override;
  void gather_rows(T* dst, const T* src, const int32_t* idx, int m, int d) override;
  void scatter_add_rows(T* dst, const T* src, const int32_t* idx, const T* weight, int m,
                        int d) override;
  void scale_rows(T* x, const T* w, int m, int d) override;
  void row_dot(T* out, const T* a, const T* b, int m, int d) override;

  void adamw(T* param, const T* grad, T* exp_avg, T* exp_avg_sq, size_t n, double lr,
             double beta1, double beta2, double eps, double weight_decay, double bc1,
             double bc2) override;

 private:
  void rope_rotate(T* x, int batch, int seq, int heads, int hd, T theta, T direction);
};

extern template class CpuBackend<float>;
extern template class CpuBackend<double>;

}  // namespace mt
