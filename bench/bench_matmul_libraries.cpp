// The matrix-product libraries side by side on the model's own products:
// OpenBLAS (sgemm; for bf16, widening to float first) and oneDNN (the matmul primitive, f32 and
// bf16 inputs with f32 output; its BLAS-like dnnl_sgemm), in float32 and bf16, on one large square
// product (the practical peak) and on every product of configs/bench.toml's
// step: the forward product and both backward products of each layer kind.
//
//   build/bench/bench_matmul_libraries [--threads N] [--reps R] [--json FILE]
//
// Prints one line a (shape, library, precision) with the median GFLOP/s of R
// timed repetitions after warm-up, and writes them as JSON. The shapes use
// the model's row-major conventions: forward y = x W^T is (N, T, tokens, out,
// in); the weight gradient dW += dy^T x is (T, N, out, in, tokens); the
// input gradient dx = dy W is (N, N, tokens, in, out).
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <oneapi/dnnl/dnnl.hpp>

namespace {

struct Shape {
  std::string name;
  bool trans_a, trans_b;
  int m, n, k;
};

// configs/bench.toml: d=256, F=512, V=512, H*hd=256, G*hd=32 (QKV out 320),
// E=8 top-2, micro-batch 4 x S 256 = 1024 tokens, ~256 rows an expert.
std::vector<Shape> model_shapes() {
  struct Layer {
    const char* name;
    int tokens, out, in;
  };
  const Layer layers[] = {{"qkv", 1024, 320, 256},     {"attn_out", 1024, 256, 256},
                          {"router", 1024, 8, 256},    {"expert_w1", 256, 512, 256},
                          {"expert_w2", 256, 256, 512}, {"lm_head", 1024, 512, 256}};
  std::vector<Shape> shapes{{"square_2048", false, false, 2048, 2048, 2048}};
  for (const Layer& l : layers) {
    shapes.push_back({std::string(l.name) + ".fwd", false, true, l.tokens, l.out, l.in});
    shapes.push_back({std::string(l.name) + ".dW", true, false, l.out, l.in, l.tokens});
    shapes.push_back({std::string(l.name) + ".dx", false, false, l.tokens, l.in, l.out});
  }
  return shapes;
}

uint16_t to_bf16(float f) {  // round to nearest even
  uint32_t u;
  std::memcpy(&u, &f, 4);
  u += 0x7fff + ((u >> 16) & 1);
  return uint16_t(u >> 16);
}

double median_seconds(const std::function<void()>& run, int reps) {
  for (int i = 0; i < 3; ++i) run();  // warm-up: packing buffers, primitive caches
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    const auto start = std::chrono::steady_clock::now();
    run();
    t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  std::nth_element(t.begin(), t.begin() + reps / 2, t.end());
  return t[reps / 2];
}

// Operands of one shape, stored untransposed row-major: A is [m, k] (or
// [k, m] when trans_a), B is [k, n] (or [n, k]).
struct Operands {
  std::vector<float> a, b, c;
  std::vector<uint16_t> a16, b16;
  explicit Operands(const Shape& s)
      : a(size_t(s.m) * s.k), b(size_t(s.k) * s.n), c(size_t(s.m) * s.n), a16(a.size()), b16(b.size()) {
    for (size_t i = 0; i < a.size(); ++i) a[i] = float(int(i % 17) - 8) * 0.01f;
    for (size_t i = 0; i < b.size(); ++i) b[i] = float(int(i % 13) - 6) * 0.01f;
    std::transform(a.begin(), a.end(), a16.begin(), to_bf16);
    std::transform(b.begin(), b.end(), b16.begin(), to_bf16);
  }
};

float from_bf16(uint16_t h) {
  const uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Debian's OpenBLAS is built without bfloat16 (no cblas_sbgemm), so its bf16
// row is the fallback a backend would take: widen both operands, then sgemm.
std::function<void()> openblas(const Shape& s, Operands& o, bool bf16) {
  const auto ta = s.trans_a ? CblasTrans : CblasNoTrans, tb = s.trans_b ? CblasTrans : CblasNoTrans;
  const int lda = s.trans_a ? s.m : s.k, ldb = s.trans_b ? s.k : s.n;
  return [=, &o] {
    if (bf16) {
      std::transform(o.a16.begin(), o.a16.end(), o.a.begin(), from_bf16);
      std::transform(o.b16.begin(), o.b16.end(), o.b.begin(), from_bf16);
    }
    cblas_sgemm(CblasRowMajor, ta, tb, s.m, s.n, s.k, 1.0f, o.a.data(), lda, o.b.data(), ldb, 0.0f, o.c.data(),
                s.n);
  };
}

// oneDNN's BLAS-like sgemm (row-major, float32 only).
std::function<void()> onednn_sgemm(const Shape& s, Operands& o) {
  const int lda = s.trans_a ? s.m : s.k, ldb = s.trans_b ? s.k : s.n;
  return [=, &o] {
    dnnl_sgemm(s.trans_a ? 'T' : 'N', s.trans_b ? 'T' : 'N', s.m, s.n, s.k, 1.0f, o.a.data(), lda, o.b.data(),
               ldb, 0.0f, o.c.data(), s.n);
  };
}

// oneDNN's matmul takes the transposes as strides of the memory descriptors.
struct OneDnn {
  dnnl::engine engine{dnnl::engine::kind::cpu, 0};
  dnnl::stream stream{engine};

  std::function<void()> matmul(const Shape& s, Operands& o, bool bf16) {
    using dt = dnnl::memory::data_type;
    const dt in_type = bf16 ? dt::bf16 : dt::f32;
    const dnnl::memory::dims a_strides = s.trans_a ? dnnl::memory::dims{1, s.m} : dnnl::memory::dims{s.k, 1};
    const dnnl::memory::dims b_strides = s.trans_b ? dnnl::memory::dims{1, s.k} : dnnl::memory::dims{s.n, 1};
    const dnnl::memory::desc a_md({s.m, s.k}, in_type, a_strides), b_md({s.k, s.n}, in_type, b_strides),
        c_md({s.m, s.n}, dt::f32, dnnl::memory::dims{s.n, 1});
    // oneDNN 2.x: an operation descriptor, then the primitive descriptor.
    auto prim = std::make_shared<dnnl::matmul>(dnnl::matmul::primitive_desc(dnnl::matmul::desc(a_md, b_md, c_md), engine));
    void* a = bf16 ? static_cast<void*>(o.a16.data()) : o.a.data();
    void* b = bf16 ? static_cast<void*>(o.b16.data()) : o.b.data();
    auto args = std::make_shared<std::unordered_map<int, dnnl::memory>>(std::unordered_map<int, dnnl::memory>{
        {DNNL_ARG_SRC, dnnl::memory(a_md, engine, a)},
        {DNNL_ARG_WEIGHTS, dnnl::memory(b_md, engine, b)},
        {DNNL_ARG_DST, dnnl::memory(c_md, engine, o.c.data())}});
    return [this, prim, args] {
      prim->execute(stream, *args);
      stream.wait();
    };
  }
};

}  // namespace

int main(int argc, char** argv) {
  int threads = 0, reps = 20;
  std::string json_path;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--threads") threads = std::atoi(argv[i + 1]);
    else if (flag == "--reps") reps = std::atoi(argv[i + 1]);
    else if (flag == "--json") json_path = argv[i + 1];
    else {
      std::fprintf(stderr, "bench_matmul_libraries: unknown flag %s\n", argv[i]);
      return 2;
    }
  }
  if (threads > 0) {
    omp_set_num_threads(threads);
    openblas_set_num_threads(threads);
  }
  std::printf("threads %d, OpenBLAS %s (%s), oneDNN %d.%d.%d\n", omp_get_max_threads(), openblas_get_config(),
              openblas_get_corename(), dnnl_version()->major, dnnl_version()->minor, dnnl_version()->patch);
  OneDnn onednn;
  nlohmann::json rows = nlohmann::json::array();
  for (const Shape& s : model_shapes()) {
    Operands o(s);
    const double flops = 2.0 * s.m * s.n * s.k;
    for (const bool bf16 : {false, true}) {
      std::vector<std::pair<const char*, std::function<void()>>> libraries = {
          {"openblas", openblas(s, o, bf16)}, {"onednn", onednn.matmul(s, o, bf16)}};
      if (!bf16) libraries.push_back({"onednn-sgemm", onednn_sgemm(s, o)});
      for (const auto& [library, run] : libraries) {
        const double gflops = flops / median_seconds(run, s.m * s.n * s.k > (1 << 28) ? 5 : reps) / 1e9;
        std::printf("%-16s %-12s %-5s %8.1f GFLOP/s\n", s.name.c_str(), library, bf16 ? "bf16" : "fp32", gflops);
        rows.push_back({{"shape", s.name}, {"m", s.m}, {"n", s.n}, {"k", s.k}, {"library", library},
                        {"precision", bf16 ? "bf16" : "fp32"}, {"gflops", gflops}});
      }
    }
  }
  if (!json_path.empty()) std::ofstream(json_path) << rows.dump(1) << "\n";
  return 0;
}
