// Checkpoint save and load bandwidth (docs/benchmarks.md, "Checkpoint
// bandwidth"; scripts/bench_checkpoint.sh runs it): a Checkpointer's save
// and load_checkpoint (checkpoint/) on the workstation MoE
// (configs/workstation-moe.toml's shape: V=384, d=256, L=4, H=8, G=1, F=512,
// E=8; 9.2 M parameters, a 110 MB file of weights and both Adam moments),
// against a plain sequential write and read of the same number of bytes
// measured in the same run.
//
//   build/bench/bench_checkpoint [--dir=DIR] [--tp=T] [--pp=P] [--iters=N] [google-benchmark flags...]
//   mpirun -np 8 build/bench/bench_checkpoint --tp=2 --pp=2 ...      (TP2 x PP2 x DP2)
//
// DIR (default /tmp/mt_bench_checkpoint) holds the checkpoints and the
// baseline file; it is left in place. The world size divided by TP x PP is
// the data-parallel (ZeRO-1) size. Every benchmark runs exactly N iterations
// (default 3) on every rank, since each is collective, and reports the
// slowest rank's time of each iteration (manual time); only rank 0 prints.
//
// Benchmarks (counter GB/s: bytes of the checkpoint file / time, GB = 1e9):
//  - Save: Checkpointer::save as training calls it, of iteration 1, 2, ...: the
//    ZeRO-1 moment shards gathered, every rank writing its rows into the one
//    new file (parallel HDF5, MPI-IO), fsync of the file and directories, the
//    renames and `latest`. The previous checkpoint is deleted between
//    iterations, untimed.
//  - Load: load_checkpoint of the weights and both moments into every rank's
//    shards, from the page cache (the file was just written; dropping the
//    cache needs privileges a benchmark should not assume).
//  - SequentialWrite: the baseline: rank 0 fwrite()s as many bytes in 1 MiB
//    blocks into a new file in DIR (the previous one deleted untimed), then
//    fflush + fsync + close (what `dd if=/dev/zero of=F bs=1M count=N
//    conv=fsync` does); the other ranks wait at a barrier.
//  - SequentialRead: rank 0 fread()s that file back in 1 MiB blocks (page
//    cache, as Load).
//  - Checksum: rank 0 hashes as many bytes with XXH3-64, the checksum every
//    saved block carries and every load checks (checkpoint/hdf5_file.h): the
//    most the checksums can add to a save or a load.
#include <benchmark/benchmark.h>
#include <fmt/format.h>
#include <mpi.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "checkpoint/block_checksum.h"
#include "checkpoint/checkpoint_dir.h"
#include "checkpoint/checkpointer.h"
#include "model/parameters.h"
#include "optim/adamw.h"
#include "parallel/grad_sync.h"
#include "parallel/pipeline_schedule.h"
#include "parallel/topology.h"
#include "runtime/communicator.h"
#include "runtime/cpu_backend.h"

namespace {

namespace fs = std::filesystem;

int g_rank = 0;

struct Flags {
  std::string dir = "/tmp/mt_bench_checkpoint";
  int tp = 1, pp = 1, iters = 3;
};

mt::ModelConfig workstation_model() {
  mt::ModelConfig c;  // the defaults are configs/workstation-moe.toml's shape but the vocabulary
  c.vocab_size = 384;
  c.hidden_size = 256;
  c.num_layers = 4;
  c.num_heads = 8;
  c.num_query_groups = 1;
  c.ffn_hidden_size = 512;
  c.num_experts = 8;
  c.router_topk = 2;
  c.seq_length = 256;
  return c;
}

// Everything a Checkpointer and load_checkpoint take, built as `train`
// builds it for this rank's place in the layout.
struct Setup {
  explicit Setup(const Flags& f)
      : topo(MPI_COMM_WORLD, mt::TopologyConfig{f.tp, f.pp}),
        be(mt::make_cpu_backend<float>()),
        model(workstation_model()),
        tp(topo.tp()),
        span(make_span(topo, model)),
        params(*be, model, tp, span, topo.dp().size),
        grad_sync(*be, params.padded_size(), partial_ranges(params), tp, topo.dp(), 1000000),
        optim(*be, mt::AdamWConfig{}, mt::shard_segments(params.tensors, grad_sync.shard(), tp.rank),
              grad_sync.shard_size(),
              {topo.tp(), topo.pp(), topo.dp()}),
        save_dir((fs::path(f.dir) / fmt::format("save_tp{}_pp{}_dp{}", topo.tp().size, topo.pp().size,
                                                 topo.dp().size))
                     .string()),
        checkpointer({save_dir}, {topo, model, params, optim, grad_sync}, [this] {
          const nlohmann::json config = {{"model", mt::model_config_to_json(model)}, {"benchmark", true}};
          return mt::CheckpointAttributes{saved, 0, 0, 1234, config, nlohmann::json::object(), ""};
        }) {
    params.initialise(*be, 1234);
    if (g_rank == 0) fs::remove_all(save_dir);  // a previous run's checkpoints
    MPI_Barrier(MPI_COMM_WORLD);
  }

  static mt::StageSpan make_span(mt::Topology& topo, const mt::ModelConfig& m) {
    const int stage = topo.coords().pp, stages = topo.pp().size;
    const auto layers = mt::stage_layers(m.num_layers, stages, 0, 0);
    return {layers[size_t(stage)].first, layers[size_t(stage)].second, stage == 0, stage == stages - 1};
  }
  static std::vector<mt::FlatRange> partial_ranges(const mt::Parameters<float>& p) {
    std::vector<mt::FlatRange> out;
    for (const mt::ParamTensor& t : p.tensors)
      if (t.partial_grad) out.push_back({t.offset, t.offset + t.numel});
    return out;
  }

  // Collective: saves the next iteration, as training does (a new
  // directory, nothing to replace).
  void save_next() { checkpointer.save(++saved, /*force=*/true); }
  // Collective, untimed: deletes all but the newest checkpoint, so that the
  // runs need one file's space and no save pays for deleting another.
  void remove_older() {
    if (g_rank == 0)
      for (int64_t i = 1; i < saved; ++i) fs::remove_all(fs::path(save_dir) / mt::checkpoint_dir_name(i));
    MPI_Barrier(MPI_COMM_WORLD);
  }
  void ensure_saved() {
    if (saved == 0) save_next();
  }
  std::string file() const { return save_dir + "/" + mt::checkpoint_dir_name(saved) + "/checkpoint.h5"; }

  mt::Topology topo;
  std::unique_ptr<mt::Backend<float>> be;
  mt::ModelConfig model;
  mt::ProcessGroup tp;
  mt::StageSpan span;
  mt::Parameters<float> params;
  mt::GradSync<float> grad_sync;
  mt::AdamW<float> optim;
  std::string save_dir;
  int64_t saved = 0;  // the newest iteration saved
  mt::Checkpointer<float> checkpointer;
};

Flags g_flags;
std::unique_ptr<Setup> g_run;

// The slowest rank's time of a collective step that began at a barrier.
template <typename F>
double timed_on_all_ranks(F&& step) {
  MPI_Barrier(MPI_COMM_WORLD);
  const double start = MPI_Wtime();
  step();
  double elapsed = MPI_Wtime() - start, slowest = 0;
  MPI_Allreduce(&elapsed, &slowest, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  return slowest;
}

// Bytes of the checkpoint file, as rank 0 sees it, on every rank.
uint64_t checkpoint_bytes() {
  uint64_t bytes = g_rank == 0 ? fs::file_size(g_run->file()) : 0;
  MPI_Bcast(&bytes, 1, MPI_UINT64_T, 0, MPI_COMM_WORLD);
  return bytes;
}

void set_counters(benchmark::State& state, uint64_t bytes) {
  state.counters["bytes"] = double(bytes);
  state.counters["GB"] = benchmark::Counter(double(bytes) / 1e9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["ranks"] = g_run->topo.world_size();
}

void BM_Save(benchmark::State& state) {
  for (auto _ : state) {
    state.SetIterationTime(timed_on_all_ranks([] { g_run->save_next(); }));
    g_run->remove_older();
  }
  set_counters(state, checkpoint_bytes());
}

void BM_Load(benchmark::State& state) {
  g_run->ensure_saved();
  for (auto _ : state)
    state.SetIterationTime(timed_on_all_ranks([] {
      mt::load_checkpoint(g_run->file(), MPI_COMM_WORLD, g_run->params, &g_run->optim, &g_run->grad_sync);
    }));
  set_counters(state, checkpoint_bytes());
}

std::string baseline_file() { return (fs::path(g_flags.dir) / "sequential.bin").string(); }

void fail(const std::string& what) {
  std::fprintf(stderr, "bench_checkpoint: %s: %s\n", what.c_str(), std::strerror(errno));
  MPI_Abort(MPI_COMM_WORLD, 1);
}

// Into a new file, as every save makes one: overwriting a file's existing
// blocks can be several times faster (a VM's virtio disk here) than
// allocating new ones, which would flatter the baseline.
void sequential_write(const std::string& path, uint64_t bytes) {
  static const std::vector<char> block(1 << 20, 1);
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) fail("cannot create " + path);
  for (uint64_t left = bytes; left > 0;) {
    const size_t n = size_t(std::min<uint64_t>(left, block.size()));
    if (std::fwrite(block.data(), 1, n, f) != n) fail("cannot write " + path);
    left -= n;
  }
  if (std::fflush(f) != 0 || ::fsync(::fileno(f)) != 0) fail("cannot sync " + path);
  std::fclose(f);
}

void sequential_read(const std::string& path, uint64_t bytes) {
  static std::vector<char> block(1 << 20);
  FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) fail("cannot open " + path);
  uint64_t got = 0;
  for (size_t n; (n = std::fread(block.data(), 1, block.size(), f)) > 0;) got += n;
  std::fclose(f);
  if (got != bytes) fail("short read of " + path);
  benchmark::DoNotOptimize(block.data());
}

void BM_SequentialWrite(benchmark::State& state) {
  g_run->ensure_saved();
  const uint64_t bytes = checkpoint_bytes();
  for (auto _ : state) {
    if (g_rank == 0) fs::remove(baseline_file());  // untimed, as for Save
    state.SetIterationTime(timed_on_all_ranks([&] {
      if (g_rank == 0) sequential_write(baseline_file(), bytes);
    }));
  }
  set_counters(state, bytes);
}

void BM_SequentialRead(benchmark::State& state) {
  g_run->ensure_saved();
  const uint64_t bytes = checkpoint_bytes();
  if (g_rank == 0 && (!fs::exists(baseline_file()) || fs::file_size(baseline_file()) != bytes))
    sequential_write(baseline_file(), bytes);
  for (auto _ : state)
    state.SetIterationTime(timed_on_all_ranks([&] {
      if (g_rank == 0) sequential_read(baseline_file(), bytes);
    }));
  set_counters(state, bytes);
}

// The checksums' share of a save: rank 0 hashes as many bytes as the file
// holds (what all ranks' blocks add up to) with the hash the writer uses.
void BM_Checksum(benchmark::State& state) {
  g_run->ensure_saved();
  const uint64_t bytes = checkpoint_bytes();
  static std::vector<char> data;
  data.assign(bytes, 1);
  for (auto _ : state)
    state.SetIterationTime(timed_on_all_ranks([&] {
      if (g_rank == 0) benchmark::DoNotOptimize(mt::checksum_bytes(data.data(), data.size()));
    }));
  set_counters(state, bytes);
}

// Ranks other than 0 run every benchmark (they are collective) and print nothing.
class NullReporter : public benchmark::BenchmarkReporter {
 public:
  bool ReportContext(const Context&) override { return true; }
  void ReportRuns(const std::vector<Run>&) override {}
};

// Takes --dir=, --tp=, --pp=, --iters= out of argv; on ranks but 0 also
// --benchmark_out*, so that only rank 0 writes the file.
void parse_flags(int& argc, char** argv) {
  int kept = 1;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&](const char* name) -> const char* {
      const std::string prefix = std::string(name) + "=";
      return a.rfind(prefix, 0) == 0 ? argv[i] + prefix.size() : nullptr;
    };
    if (const char* v = value("--dir")) g_flags.dir = v;
    else if (const char* v = value("--tp")) g_flags.tp = std::atoi(v);
    else if (const char* v = value("--pp")) g_flags.pp = std::atoi(v);
    else if (const char* v = value("--iters")) g_flags.iters = std::atoi(v);
    else if (g_rank != 0 && a.rfind("--benchmark_out", 0) == 0) continue;
    else argv[kept++] = argv[i];
  }
  argc = kept;
  if (g_flags.tp < 1 || g_flags.pp < 1 || g_flags.iters < 1) {
    if (g_rank == 0) std::fprintf(stderr, "bench_checkpoint: --tp, --pp and --iters must be >= 1\n");
    MPI_Abort(MPI_COMM_WORLD, 2);
  }
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
  parse_flags(argc, argv);
  int rc = 0;
  try {
    if (g_rank == 0) fs::create_directories(g_flags.dir);
    g_run = std::make_unique<Setup>(g_flags);
    for (auto [name, fn] : {std::pair{"Save", &BM_Save}, std::pair{"Load", &BM_Load},
                            std::pair{"SequentialWrite", &BM_SequentialWrite},
                            std::pair{"SequentialRead", &BM_SequentialRead}, std::pair{"Checksum", &BM_Checksum}})
      benchmark::RegisterBenchmark(name, fn)->Iterations(g_flags.iters)->UseManualTime()->Unit(benchmark::kMillisecond);
    benchmark::Initialize(&argc, argv);
    if (g_rank == 0) {
      std::printf("bench_checkpoint: %d ranks (TP %d x PP %d x DP %d), %zu parameters a replica, in %s\n",
                  g_run->topo.world_size(), g_run->topo.tp().size, g_run->topo.pp().size, g_run->topo.dp().size,
                  size_t(g_run->model.num_parameters()), g_flags.dir.c_str());
      std::fflush(stdout);
      benchmark::RunSpecifiedBenchmarks();
    } else {
      NullReporter quiet;
      benchmark::RunSpecifiedBenchmarks(&quiet);
    }
    benchmark::Shutdown();
    g_run.reset();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_checkpoint: error: %s\n", e.what());
    MPI_Abort(MPI_COMM_WORLD, 1);
    rc = 1;
  }
  MPI_Finalize();
  return rc;
}
