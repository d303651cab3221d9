// sgemm throughput through the CPU backend (mt::make_cpu_backend<float>()->gemm,
// i.e. the OpenMP build of OpenBLAS), reported as the counter "GFLOP/s"
// (2*m*n*k FLOPs an iteration, over wall-clock time).
//
//   build/bench/bench_sgemm [--threads=N] [google-benchmark flags...]
//
// Threads: --threads=N, else env MT_BENCH_THREADS, else the cores this process
// may run on. Use the same count as the training run it is compared with
// (scripts/bench_throughput.sh passes the same THREADS to both).
//
// Shapes: Square/1024 is the large square product, the practical peak of the
// machine. The others are the products of configs/bench.toml (d=256, F=512,
// V=512, H*hd=256, G*hd=32, micro-batch 4 x S 256 = 1024 tokens), written as
// the model calls them: forward y = x W^T is gemm(N, T, tokens, out, in);
// the weight gradient dW += dy^T x is gemm(T, N, out, in, tokens); the input
// gradient dx = dy W is gemm(N, N, tokens, in, out).
#include <benchmark/benchmark.h>
#include <sched.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "runtime/backend.h"
#include "runtime/threads.h"

namespace {

int g_threads = 1;

int default_threads() {
  if (const char* env = std::getenv("MT_BENCH_THREADS"); env && *env) {
    const int n = std::atoi(env);
    if (n >= 1) return n;
  }
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return CPU_COUNT(&set);
  return int(std::max(1u, std::thread::hardware_concurrency()));
}

// C[m,n] = op(A) op(B) with the model's row-major conventions.
void run_gemm(benchmark::State& state, mt::Trans ta, mt::Trans tb) {
  const int m = int(state.range(0)), n = int(state.range(1)), k = int(state.range(2));
  auto be = mt::make_cpu_backend<float>();
  const size_t a_size = size_t(m) * k, b_size = size_t(k) * n, c_size = size_t(m) * n;
  std::vector<float> host(std::max(a_size, b_size));
  for (size_t i = 0; i < host.size(); ++i) host[i] = float(int(i % 17) - 8) * 0.01f;
  mt::DeviceBuffer<float> A(*be, a_size), B(*be, b_size), C(*be, c_size);
  be->from_host(A.data(), host.data(), a_size);
  be->from_host(B.data(), host.data(), b_size);
  // Leading dimensions of the stored (untransposed) row-major arrays.
  const int lda = ta == mt::Trans::N ? k : m;
  const int ldb = tb == mt::Trans::N ? n : k;

  for (auto _ : state) {
    be->gemm(ta, tb, m, n, k, 1.0f, A.data(), lda, B.data(), ldb, 0.0f, C.data(), n);
    benchmark::DoNotOptimize(C.data());
    benchmark::ClobberMemory();
  }
  const double flops = 2.0 * double(m) * double(n) * double(k);
  state.counters["GFLOP/s"] =
      benchmark::Counter(flops * 1e-9 * double(state.iterations()), benchmark::Counter::kIsRate);
  state.counters["threads"] = g_threads;
}

void BM_Square(benchmark::State& s) { run_gemm(s, mt::Trans::N, mt::Trans::N); }
void BM_Forward(benchmark::State& s) { run_gemm(s, mt::Trans::N, mt::Trans::T); }
void BM_WeightGrad(benchmark::State& s) { run_gemm(s, mt::Trans::T, mt::Trans::N); }
void BM_InputGrad(benchmark::State& s) { run_gemm(s, mt::Trans::N, mt::Trans::N); }

// Wall-clock time: BLAS runs on a thread pool, so the main thread's CPU time
// would not be the time the product took.
#define MT_GEMM_BENCH(fn, name, m, n, k)                                      \
  BENCHMARK(fn)->Name(name)->Args({m, n, k})->ArgNames({"m", "n", "k"})     \
      ->UseRealTime()->Unit(benchmark::kMicrosecond)

// The machine's peak: one large square product.
MT_GEMM_BENCH(BM_Square, "Square", 1024, 1024, 1024);

// Forward products of one micro-batch (1024 tokens).
MT_GEMM_BENCH(BM_Forward, "Attn_wq_wo", 1024, 256, 256);   // q = a wq^T, h += o wo^T
MT_GEMM_BENCH(BM_Forward, "Attn_wk_wv", 1024, 32, 256);    // multi-query k, v (G*hd = 32)
MT_GEMM_BENCH(BM_Forward, "Expert_w1_all", 1024, 512, 256);  // all tokens through one w1
MT_GEMM_BENCH(BM_Forward, "Expert_w1_routed", 256, 512, 256);  // T*K/E = 256 tokens an expert
MT_GEMM_BENCH(BM_Forward, "Expert_w2_routed", 256, 256, 512);
MT_GEMM_BENCH(BM_Forward, "LM_head", 1024, 512, 256);     // logits = hf lm_head^T

// Backward products (the same FLOPs as forward, different transposes).
MT_GEMM_BENCH(BM_WeightGrad, "Attn_wq_dW", 256, 256, 1024);   // dwq += dq^T a
MT_GEMM_BENCH(BM_InputGrad, "Attn_wq_dX", 1024, 256, 256);    // da = dq wq
MT_GEMM_BENCH(BM_WeightGrad, "Expert_w1_dW_routed", 512, 256, 256);
MT_GEMM_BENCH(BM_WeightGrad, "LM_head_dW", 512, 256, 1024);
MT_GEMM_BENCH(BM_InputGrad, "LM_head_dX", 1024, 256, 512);

}  // namespace

int main(int argc, char** argv) {
  g_threads = default_threads();
  // Take --threads=N / --threads N out of argv before Google Benchmark sees it.
  std::vector<char*> args;
  for (int i = 0; i < argc; ++i) {
    if (std::strncmp(argv[i], "--threads=", 10) == 0) {
      g_threads = std::atoi(argv[i] + 10);
    } else if (std::strcmp(argv[i], "--threads") == 0 && i + 1 < argc) {
      g_threads = std::atoi(argv[++i]);
    } else {
      args.push_back(argv[i]);
    }
  }
  if (g_threads < 1) {
    std::fprintf(stderr, "bench_sgemm: --threads must be >= 1\n");
    return 2;
  }
  mt::set_thread_count(g_threads);
  benchmark::AddCustomContext("mt_threads", std::to_string(g_threads));

  int new_argc = int(args.size());
  args.push_back(nullptr);
  benchmark::Initialize(&new_argc, args.data());
  if (benchmark::ReportUnrecognizedArguments(new_argc, args.data())) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
