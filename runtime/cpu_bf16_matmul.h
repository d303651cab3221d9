// bf16 matrix products with float32 accumulation on the CPU, through
// oneDNN's matmul primitive: the inputs stay bf16, the output is bf16 or
// float32. Where oneDNN has no bf16 product for this CPU (no AVX-512), the
// inputs are widened to float32 and multiplied by oneDNN's sgemm: the same
// numbers, computed slowly.
#pragma once

#include <memory>
#include <string>

#include "runtime/backend.h"

namespace mt {

class Bf16Matmul {
 public:
  Bf16Matmul();
  ~Bf16Matmul();

  // C[m, n] = alpha op(A) op(B) + beta C, C bf16 or float32 (row-major, as
  // Backend::gemm). Safe to call from several threads at once.
  void run(Trans ta, Trans tb, int m, int n, int k, float alpha, const bf16* A, int lda, const bf16* B, int ldb,
           float beta, bf16* C, int ldc);
  void run(Trans ta, Trans tb, int m, int n, int k, float alpha, const bf16* A, int lda, const bf16* B, int ldb,
           float beta, float* C, int ldc);

  // Whether oneDNN multiplies bf16 here; false: widened to float32.
  bool native() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace mt
