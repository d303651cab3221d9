// Data loader throughput: the blended multi-epoch stream of data/ on a
// 10^8-token blend of two synthetic stores, against a memcpy baseline measured
// in the same run (docs/benchmarks.md, "Data loader throughput").
//
//   MT_BENCH_DATA_DIR=/tmp/mt_bench_data build/bench/bench_data_loader [google-benchmark flags...]
//
// The stores are written once and reused (checked by opening them): DIR/text
// (4x10^7 uint16 tokens) and DIR/code (6x10^7), documents of uniform random
// length 200..20000 tokens, random byte ids 0..255 each ended by 256 (the
// byte tokenizer's end of document), written with IndexedDatasetWriter. The
// blend is text=2 code=4 epochs at S=256, seed 1234. One thread throughout:
// the loader runs on the training thread.
//
// Benchmarks:
//  - StartUp: constructing BlendedStream (open and validate both stores, build
//    the Tijdeman interleave order and its block counts), then reading the
//    first position of each source, which builds each source's epoch-0
//    permutation. Counters construct_s, first_perms_s (seconds, averaged).
//  - CheckTokenRange: check_token_range(512) on both stores (the scan `train`
//    does at start-up), warm page cache.
//  - Loader: BlendedStream::read(n, out) over consecutive positions, one
//    global batch of 16 samples of S+1 tokens per iteration, 8 consecutive
//    batches from each of 1024 random starting positions across the whole run
//    (visited in increasing order, as training moves through the epochs).
//    A permutation is built once per epoch of a source in a whole run (6 here,
//    over 1.25M samples); so that this sweep does not count them far more
//    often than training does, the few batches that enter a new epoch have
//    their permutations built with the timer paused (StartUp times them).
//    Counters: samples/s, GB/s of int32 tokens written (tokens x 4 bytes).
//  - PickOnly: the same batches, BlendedStream::pick(n) only (source, ordinal
//    and store sample of each position, no tokens read), to show how much of
//    Loader's time is finding the sample (same untimed epoch entries).
//  - MemcpyBatch: the baseline, memcpy of the same byte count per iteration
//    (16 x 257 x 4 bytes, into the same kind of output buffer) from random
//    offsets in a 400 MB buffer (the 10^8 tokens as int32), so its source is
//    not in cache either. Counter GB/s.
//  - MemcpyStream: memcpy of 64 MiB blocks, the machine's streaming bandwidth
//    (context only).
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "data/blended_stream.h"
#include "data/data_sources.h"
#include "data/indexed_dataset.h"
#include "runtime/threads.h"

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

constexpr int kSeqLength = 256;
constexpr int kBatch = 16;  // global batch of configs/bench.toml
constexpr int kVocab = 512;  // configs/bench.toml's vocabulary
constexpr uint64_t kSeed = 1234;
constexpr int kStarts = 1024;          // random starting positions
constexpr int kBatchesPerStart = 8;    // consecutive global batches from each
constexpr size_t kSampleTokens = size_t(kSeqLength) + 1;
constexpr size_t kBatchBytes = size_t(kBatch) * kSampleTokens * sizeof(int32_t);

struct StoreSpec {
  const char* name;
  uint64_t tokens;
  uint64_t seed;
};
constexpr StoreSpec kStores[] = {{"text", 40'000'000, 11}, {"code", 60'000'000, 22}};

std::string g_dir;

std::string prefix_of(const StoreSpec& s) { return (fs::path(g_dir) / s.name).string(); }

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// True if the store exists, opens and holds the expected token count.
bool store_ready(const StoreSpec& s) {
  try {
    mt::data::IndexedDataset store(prefix_of(s));
    return store.num_tokens() == s.tokens && store.dtype() == mt::data::DType::kUint16;
  } catch (const std::exception&) {
    return false;
  }
}

void write_store(const StoreSpec& s) {
  const auto t0 = Clock::now();
  std::fprintf(stderr, "bench_data_loader: writing %s (%llu tokens)...\n", prefix_of(s).c_str(),
               static_cast<unsigned long long>(s.tokens));
  mt::data::IndexedDatasetWriter writer(prefix_of(s), mt::data::DType::kUint16);
  std::mt19937_64 rng(s.seed);
  std::uniform_int_distribution<uint64_t> length(200, 20000);
  std::vector<int32_t> doc;
  uint64_t left = s.tokens;
  while (left > 0) {
    uint64_t n = length(rng);
    // Keep every document >= 200 tokens and end exactly at s.tokens.
    if (left - std::min(n, left) < 200) n = left <= 20000 ? left : left - 200;
    doc.resize(n);
    for (uint64_t i = 0; i + 1 < n; i += 8) {  // 8 byte ids from each 64-bit draw
      uint64_t bits = rng();
      for (uint64_t j = i; j < std::min(i + 8, n - 1); ++j, bits >>= 8) doc[j] = int32_t(bits & 0xff);
    }
    doc[n - 1] = 256;  // end of document
    writer.add_document(doc);
    left -= n;
  }
  writer.finalize();
  std::fprintf(stderr, "bench_data_loader: wrote %s: %llu documents in %.1f s\n", prefix_of(s).c_str(),
               static_cast<unsigned long long>(writer.num_documents()), seconds_since(t0));
}

std::vector<mt::data::SourceSpec> blend_specs() {
  return mt::data::parse_sources({"text=" + prefix_of(kStores[0]), "code=" + prefix_of(kStores[1])},
                                 {"text=2", "code=4"});
}

// Positions where some source takes the first sample of one of its epochs,
// sorted (binary search on counts_before, which grows with n).
std::vector<uint64_t> epoch_starts(const mt::data::BlendedStream& stream) {
  std::vector<uint64_t> out;
  for (int s = 0; s < stream.num_sources(); ++s) {
    const auto& src = stream.source(s);
    const uint64_t per_epoch = src.samples.num_samples();
    for (uint64_t first = 0; first < src.total; first += per_epoch) {
      // Smallest n with counts_before(n + 1)[s] > first.
      uint64_t lo = 0, hi = stream.size() - 1;
      while (lo < hi) {
        const uint64_t mid = lo + (hi - lo) / 2;
        if (stream.counts_before(mid + 1)[size_t(s)] > first) hi = mid; else lo = mid + 1;
      }
      out.push_back(lo);
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

// --- (a) start-up -----------------------------------------------------------

void BM_StartUp(benchmark::State& state) {
  double construct_s = 0, perms_s = 0, positions = 0;
  for (auto _ : state) {
    const auto t0 = Clock::now();
    mt::data::BlendedStream stream(blend_specs(), kSeqLength, kSeed);
    const double c = seconds_since(t0);
    // The first position of each source builds its epoch-0 permutation.
    const auto t1 = Clock::now();
    std::vector<bool> seen(size_t(stream.num_sources()), false);
    int left = stream.num_sources();
    for (uint64_t n = 0; left > 0; ++n) {
      const auto p = stream.pick(n);
      if (!seen[size_t(p.source)]) {
        seen[size_t(p.source)] = true;
        --left;
      }
      benchmark::DoNotOptimize(p.sample);
    }
    perms_s += seconds_since(t1);
    construct_s += c;
    positions = double(stream.size());
  }
  state.counters["construct_s"] = benchmark::Counter(construct_s, benchmark::Counter::kAvgIterations);
  state.counters["first_perms_s"] = benchmark::Counter(perms_s, benchmark::Counter::kAvgIterations);
  state.counters["positions"] = positions;
}
BENCHMARK(BM_StartUp)->Name("StartUp")->Iterations(5)->UseRealTime()->Unit(benchmark::kMillisecond);

void BM_CheckTokenRange(benchmark::State& state) {
  mt::data::IndexedDataset text(prefix_of(kStores[0])), code(prefix_of(kStores[1]));
  for (auto _ : state) {
    text.check_token_range(kVocab);
    code.check_token_range(kVocab);
  }
  const double bytes = double(text.num_tokens() + code.num_tokens()) * 2.0;
  state.counters["GB/s"] = benchmark::Counter(bytes * 1e-9 * double(state.iterations()),
                                              benchmark::Counter::kIsRate);
}
BENCHMARK(BM_CheckTokenRange)->Name("CheckTokenRange")->Iterations(5)->UseRealTime()
    ->Unit(benchmark::kMillisecond);

// --- (b) the loader ---------------------------------------------------------

// Batch starts: kStarts random positions (sorted), kBatchesPerStart batches
// from each; runs that would pass the end are clipped to it.
std::vector<uint64_t> batch_starts(uint64_t size, uint64_t seed) {
  std::mt19937_64 rng(seed);
  const uint64_t span = uint64_t(kBatch) * kBatchesPerStart;
  std::uniform_int_distribution<uint64_t> pos(0, size - span);
  std::vector<uint64_t> starts(kStarts);
  for (auto& s : starts) s = pos(rng);
  std::sort(starts.begin(), starts.end());
  std::vector<uint64_t> out;
  for (uint64_t s : starts)
    for (int b = 0; b < kBatchesPerStart; ++b) out.push_back(s + uint64_t(b) * kBatch);
  return out;
}

// One global batch an iteration from the sorted random starts; with
// `read_tokens` false only pick(n) is called for each position.
void run_batches(benchmark::State& state, bool read_tokens) {
  mt::data::BlendedStream stream(blend_specs(), kSeqLength, kSeed);
  const std::vector<uint64_t> starts = batch_starts(stream.size(), 7);
  const std::vector<uint64_t> epochs = epoch_starts(stream);
  std::vector<int32_t> out(size_t(kBatch) * kSampleTokens);
  size_t next = 0;
  uint64_t prev_end = 0;
  int64_t samples = 0, prebuilt = 0;
  for (auto _ : state) {
    const uint64_t first = starts[next];
    const bool wrapped = next == 0;  // back to the first start: epochs restart
    next = next + 1 == starts.size() ? 0 : next + 1;
    // Entering new epochs: build their permutations untimed. (Runs from two
    // starts may overlap: the first batch of the second then begins before
    // prev_end, and the check starts from the smaller of the two.)
    const uint64_t end = first + kBatch;
    const uint64_t from = wrapped ? 0 : std::min(first, prev_end);
    const auto crossing = std::lower_bound(epochs.begin(), epochs.end(), from);
    if (crossing != epochs.end() && *crossing < end) {
      state.PauseTiming();
      for (uint64_t n = first; n < end; ++n) benchmark::DoNotOptimize(stream.pick(n));
      ++prebuilt;
      state.ResumeTiming();
    }
    prev_end = end;
    if (read_tokens) {
      for (int i = 0; i < kBatch; ++i) stream.read(first + uint64_t(i), out.data() + size_t(i) * kSampleTokens);
      benchmark::DoNotOptimize(out.data());
      benchmark::ClobberMemory();
    } else {
      for (int i = 0; i < kBatch; ++i) benchmark::DoNotOptimize(stream.pick(first + uint64_t(i)));
    }
    samples += kBatch;
  }
  state.counters["samples/s"] = benchmark::Counter(double(samples), benchmark::Counter::kIsRate);
  if (read_tokens)
    state.counters["GB/s"] = benchmark::Counter(double(samples) * double(kSampleTokens) * 4e-9,
                                                benchmark::Counter::kIsRate);
  state.counters["untimed_epoch_entries"] = double(prebuilt);
}

void BM_Loader(benchmark::State& state) { run_batches(state, true); }
BENCHMARK(BM_Loader)->Name("Loader")->MinTime(2.0)->UseRealTime()->Unit(benchmark::kMicrosecond);

// The same batches, pick(n) only (which store sample each position is, no
// tokens read): how much of Loader is finding the sample.
void BM_Pick(benchmark::State& state) { run_batches(state, false); }
BENCHMARK(BM_Pick)->Name("PickOnly")->MinTime(2.0)->UseRealTime()->Unit(benchmark::kMicrosecond);

// --- (c) memcpy baselines ---------------------------------------------------

void BM_MemcpyBatch(benchmark::State& state) {
  const uint64_t tokens = kStores[0].tokens + kStores[1].tokens;
  std::vector<int32_t> src(tokens);  // 400 MB, every page touched
  for (uint64_t i = 0; i < tokens; ++i) src[i] = int32_t(i & 0xff);
  // Random token offsets across the buffer, one a batch.
  const uint64_t batch_tokens = uint64_t(kBatch) * kSampleTokens;
  std::mt19937_64 rng(7);
  std::uniform_int_distribution<uint64_t> pos(0, tokens - batch_tokens);
  std::vector<uint64_t> starts(size_t(kStarts) * kBatchesPerStart);
  for (auto& s : starts) s = pos(rng);
  std::vector<int32_t> out(batch_tokens);
  size_t next = 0;
  int64_t batches = 0;
  for (auto _ : state) {
    std::memcpy(out.data(), src.data() + starts[next], kBatchBytes);
    next = next + 1 == starts.size() ? 0 : next + 1;
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
    ++batches;
  }
  state.counters["GB/s"] = benchmark::Counter(double(batches) * double(kBatchBytes) * 1e-9,
                                              benchmark::Counter::kIsRate);
}
BENCHMARK(BM_MemcpyBatch)->Name("MemcpyBatch")->MinTime(2.0)->UseRealTime()->Unit(benchmark::kMicrosecond);

void BM_MemcpyStream(benchmark::State& state) {
  const size_t bytes = size_t(64) << 20;
  std::vector<char> a(bytes, 1), b(bytes, 2);
  for (auto _ : state) {
    std::memcpy(b.data(), a.data(), bytes);
    benchmark::DoNotOptimize(b.data());
    benchmark::ClobberMemory();
  }
  state.counters["GB/s"] = benchmark::Counter(double(state.iterations()) * double(bytes) * 1e-9,
                                              benchmark::Counter::kIsRate);
}
BENCHMARK(BM_MemcpyStream)->Name("MemcpyStream")->MinTime(1.0)->UseRealTime()->Unit(benchmark::kMillisecond);

}  // namespace

int main(int argc, char** argv) {
  const char* env = std::getenv("MT_BENCH_DATA_DIR");
  g_dir = env && *env ? env : "/tmp/mt_bench_data";
  try {
    fs::create_directories(g_dir);
    for (const StoreSpec& s : kStores)
      if (!store_ready(s)) write_store(s);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_data_loader: %s\n", e.what());
    return 1;
  }
  mt::set_thread_count(1);  // the loader runs on the training thread
  benchmark::AddCustomContext("mt_threads", "1");
  benchmark::AddCustomContext("mt_bench_data_dir", g_dir);

  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
