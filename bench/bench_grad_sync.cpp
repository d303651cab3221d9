// bench_grad_sync: ZeRO-1's collectives as training runs them, against plain
// MPI calls of the same sizes (scripts/bench_data_parallel.sh,
// docs/benchmarks.md).
//
//   mpirun -np DP bench_grad_sync [--reps R] [--warmup W] COUNT BUCKET
//
// COUNT: the float32 elements of one replica's flat parameter buffer;
// BUCKET: --ddp-bucket-size. Every rank of the world is one data-parallel
// replica. Per repetition, after a barrier:
//   grad_sync_reduce_scatter: GradSync<float> launches every bucket's
//     MPI_Ireduce_scatter_block and waits (what the run does when the whole
//     backward pass is done; during training the launches spread over it);
//   grad_sync_all_gather: GradSync<float>::all_gather (bucketed
//     MPI_Iallgather in place), as after every optimizer step;
//   plain_reduce_scatter: one MPI_Reduce_scatter_block of the padded buffer;
//   plain_all_gather: one MPI_Allgather (in place) of the padded buffer.
// A repetition's time is the slowest rank's; reported: the median. Bus
// bandwidth as nccl-tests defines it for both: busbw = bytes / time *
// (DP - 1) / DP, bytes = the whole padded buffer.
// Rank 0 prints one JSON object.
#include <mpi.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "mpi_timing.h"
#include "parallel/grad_sync.h"
#include "runtime/communicator.h"
#include "runtime/cpu_backend.h"

using mt::bench::median;
using mt::bench::timed;

int main(int argc, char** argv) {
  const auto [rank, dp] = mt::bench::start_mpi(&argc, &argv);
  const mt::bench::BenchArgs args = mt::bench::parse_bench_args(argc, argv);
  const int reps = args.reps, warmup = args.warmup;
  const std::vector<long long>& positional = args.positional;
  if (positional.size() != 2 || positional[0] <= 0 || positional[1] <= 0 || reps < 1 || warmup < 0 || dp < 2)
    return mt::bench::usage_exit(rank, "mpirun -np DP (>= 2) bench_grad_sync [--reps R] [--warmup W] COUNT BUCKET");
  const size_t count = size_t(positional[0]), bucket = size_t(positional[1]);
  const size_t padded = mt::padded_size(count, dp);

  auto be = mt::make_cpu_backend<float>();
  mt::MpiCommunicator world(MPI_COMM_WORLD);
  mt::GradSync<float> sync(*be, padded, {}, mt::ProcessGroup{}, mt::ProcessGroup{&world, rank, dp}, bucket);
  std::vector<float> grads(padded), values(padded), shard(padded / dp);
  for (size_t i = 0; i < padded; ++i) grads[i] = values[i] = float(rank + 1) * 1e-3f * float(i % 97);

  std::vector<double> rs, ag, plain_rs, plain_ag;
  for (int r = 0; r < warmup + reps; ++r) {
    const double a = timed([&] {
      sync.start_step();
      sync.finish(grads.data());
    });
    const double b = timed([&] { sync.all_gather(values.data()); });
    const double c = timed([&] {
      MPI_Reduce_scatter_block(grads.data(), shard.data(), int(padded / dp), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    });
    const double d = timed([&] {
      MPI_Allgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, values.data(), int(padded / dp), MPI_FLOAT, MPI_COMM_WORLD);
    });
    if (r < warmup) continue;
    rs.push_back(a);
    ag.push_back(b);
    plain_rs.push_back(c);
    plain_ag.push_back(d);
  }
  // The bucketed reduce-scatter must sum what the plain one does.
  const float* sums = sync.shard_grads(grads.data());
  float expect_factor = 0;
  for (int k = 1; k <= dp; ++k) expect_factor += float(k);
  bool sums_ok = true;
  size_t offset = 0;
  for (const mt::FlatRange& piece : sync.shard()) {
    for (size_t i = piece.begin; i < piece.end; ++i)
      if (std::abs(sums[offset + i - piece.begin] - expect_factor * 1e-3f * float(i % 97)) > 1e-4f) sums_ok = false;
    offset += piece.size();
  }
  int ok = sums_ok;
  MPI_Allreduce(MPI_IN_PLACE, &ok, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);

  if (rank == 0) {
    const double bytes = 4.0 * double(padded), bus = double(dp - 1) / dp;
    auto entry = [&](const std::vector<double>& t) {
      const double m = median(t);
      return nlohmann::json{{"median_s", m}, {"busbw_GBps", bytes / m * bus / 1e9}};
    };
    char version[MPI_MAX_LIBRARY_VERSION_STRING];
    int len = 0;
    MPI_Get_library_version(version, &len);
    const nlohmann::json out = {{"dp", dp},
                                {"count", count},
                                {"padded", padded},
                                {"bucket", bucket},
                                {"buckets", sync.buckets().size()},
                                {"bytes", bytes},
                                {"reps", reps},
                                {"sums_ok", ok == 1},
                                {"mpi", std::string(version, version + std::min(len, 60))},
                                {"grad_sync_reduce_scatter", entry(rs)},
                                {"grad_sync_all_gather", entry(ag)},
                                {"plain_reduce_scatter", entry(plain_rs)},
                                {"plain_all_gather", entry(plain_ag)}};
    std::printf("%s\n", out.dump().c_str());
  }
  MPI_Finalize();
  return ok == 1 ? 0 : 1;
}
