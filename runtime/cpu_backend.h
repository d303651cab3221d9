// The CPU backend: oneDNN for float32 and bf16 matrix products, OpenBLAS for
// float64 ones, and OpenMP loops for everything else; all three on the one
// OpenMP runtime (libgomp), so that one thread pool serves them. Loops read
// bf16 into float and sum in double, so every precision rounds only what it
// stores.
#pragma once

#include <memory>
#include <mutex>
#include <type_traits>
#include <variant>
#include <vector>

#include "runtime/backend.h"

namespace mt {

class Bf16Matmul;  // oneDNN bf16 products (runtime/cpu_bf16_matmul.cpp)

template <typename T>
class CpuBackend final : public Backend<T> {
 public:
  using Acc = acc_t<T>;
  CpuBackend();
  ~CpuBackend() override;

  const char* name() const override { return "cpu"; }
  std::string library() const override;
  Backend<Acc>& acc() override;

  T* alloc(size_t n) override;
  int32_t* alloc_int(size_t n) override;
  void free(void* p) override;
  void to_host(T* host, const T* dev, size_t n) override;
  void from_host(T* dev, const T* host, size_t n) override;
  void int_from_host(int32_t* dev, const int32_t* host, size_t n) override;
  void copy(T* dst, const T* src, size_t n) override;
  void fill(T* x, T value, size_t n) override;
  void round_from_acc(T* dst, const Acc* src, size_t n) override;
  void add_rounded(T* dst, const Acc* src, size_t n) override;
  void widen_to_acc(Acc* dst, const T* src, size_t n) override;

  void gemm(Trans ta, Trans tb, int m, int n, int k, T alpha, const T* A, int lda, const T* B,
            int ldb, T beta, T* C, int ldc) override;
  void gemm_acc(Trans ta, Trans tb, int m, int n, int k, Acc alpha, const T* A, int lda, const T* B,
                int ldb, Acc beta, Acc* C, int ldc) override;
  void gemm_grouped(Trans ta, Trans tb, int n, T alpha, int lda, int ldb, T beta, int ldc,
                    const std::vector<GroupMember<T, T>>& members) override;
  void gemm_acc_grouped(Trans ta, Trans tb, int n, Acc alpha, int lda, int ldb, Acc beta, int ldc,
                        const std::vector<GroupMember<T, Acc>>& members) override;
  void axpy(size_t n, T alpha, const T* x, T* y) override;
  void scale(size_t n, T alpha, T* x) override;
  double sum_squares(size_t n, const T* x) override;

  void embedding_forward(T* out, const T* table, const int32_t* tokens, int n, int d,
                         int vocab_start, int rows) override;
  void embedding_backward(Acc* dtable, const T* dout, const int32_t* tokens, int n, int d,
                          int vocab_start, int rows) override;
  void rmsnorm_forward(T* out, Acc* rstd, const T* x, const T* g, int n, int d, double eps) override;
  void rmsnorm_backward(T* dx, Acc* dg, const T* dout, const T* x, const T* g, const Acc* rstd, int n,
                        int d) override;
  void rope_forward(T* x, const RopeShape& r) override;
  void rope_backward(T* dx, const RopeShape& r) override;
  void attention_forward(T* out, Acc* lse, const T* q, const T* k, const T* v,
                         const AttentionShape& a) override;
  void attention_backward(T* dq, T* dk, T* dv, const T* dout, const T* out, const Acc* lse,
                          const T* q, const T* k, const T* v, const AttentionShape& a) override;
  void attention_merge(Acc* out, Acc* lse, const T* out_b, const Acc* lse_b, const AttentionShape& a) override;
  void kv_cache_store(T* cache, const T* x, const int32_t* seq, const int32_t* pos, int n,
                      const KvCacheShape& c) override;
  void attention_decode(T* out, const T* q, const T* k_cache, const T* v_cache, const int32_t* seq,
                        const int32_t* pos, int n, const AttentionShape& a, const KvCacheShape& c) override;
  void gelu_forward(T* out, const T* in, size_t n) override;
  void gelu_backward(T* din, const T* dout, const T* in, size_t n) override;
  void swiglu_forward(T* out, const T* gate, const T* up, size_t n) override;
  void swiglu_backward(T* dgate, T* dup, const T* dout, const T* gate, const T* up, size_t n) override;
  void sigmoid_forward(T* y, const T* x, size_t n) override;
  void sigmoid_backward(T* dx, const T* dy, const T* y, size_t n) override;
  void softmax_forward(T* p, const T* x, int n, int c) override;
  void softmax_backward(T* dx, const T* dp, const T* p, int n, int c) override;
  void row_max(T* m, const T* logits, int n, int v) override;
  void ce_partials(T* p, const T* logits, const T* m, const int32_t* targets, int n, int v,
                   int vocab_start) override;
  void ce_finish(Acc* losses, T* dlogits, const Acc* logits, const Acc* m, const Acc* p,
                 const int32_t* targets, int n, int v, int vocab_start, double dscale) override;
  void gather_rows(T* dst, const T* src, const int32_t* idx, int m, int d) override;
  void scatter_add_rows(T* dst, const T* src, const int32_t* idx, const Acc* weight, int m,
                        int d) override;
  void scale_rows(T* x, const Acc* w, int m, int d) override;
  void row_dot(Acc* out, const T* a, const T* b, int m, int d) override;

  void adamw(T* param, const T* grad, T* exp_avg, T* exp_avg_sq, size_t n, const AdamWStep& s) override;

 private:
  void rope_rotate(T* x, const RopeShape& r, double direction);
  // A product of Acc matrices: gemm, or the float32 backend's under bf16.
  void acc_gemm(Trans ta, Trans tb, int m, int n, int k, Acc alpha, const Acc* A, int lda, const Acc* B, int ldb,
                Acc beta, Acc* C, int ldc);

  static constexpr bool kMixed = !std::is_same_v<T, Acc>;
  // RoPE's angles of the last shape (rope_rotate).
  struct RopeTable {
    int positions = 0, hd = 0;
    double theta = 0, interpolation = 0;
    std::vector<Acc> cos, sin;  // [positions, hd / 2]
  } rope_;
  // attention_backward's key and value gradients, one pair a thread, kept
  // between calls: allocating them afresh costs page faults every call.
  std::vector<std::vector<Acc>> dk_of_thread_, dv_of_thread_;
  // bf16: the float32 backend beside it, and the oneDNN products.
  std::conditional_t<kMixed, std::unique_ptr<CpuBackend<Acc>>, std::monostate> acc_;
  std::conditional_t<kMixed, std::unique_ptr<Bf16Matmul>, std::monostate> matmul_;
};

extern template class CpuBackend<float>;
extern template class CpuBackend<double>;
extern template class CpuBackend<bf16>;

}  // namespace mt
