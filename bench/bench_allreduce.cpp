// bench_allreduce: the plain MPI_Allreduce baseline of the tensor-parallel
// benchmark (scripts/bench_tensor_parallel.sh, docs/benchmarks.md).
//
//   mpirun -np N bench_allreduce [--reps R] [--warmup W] [--flush-mib M] COUNT...
//
// For each COUNT (float32 elements) it times MPI_Allreduce(MPI_IN_PLACE, buf,
// COUNT, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD), the call MpiCommunicator makes
// for a TP all-reduce, W times untimed then R times timed, the sizes taking
// turns within each repetition. Before each call the buffer is refilled (as
// training writes it just before reducing it) and the ranks meet at a
// barrier, so a repetition's time is the collective's own cost with no skew
// between ranks. --flush-mib M (default 0) makes each rank first write a
// private M MiB buffer, so that MPI's shared-memory segments start out of
// cache, as they do after a training step's products. A repetition's time is
// the slowest rank's; the figure reported is the median over repetitions.
// Bandwidths follow nccl-tests: algbw = bytes / time,
// busbw = algbw * 2 (N - 1) / N.
//
// Rank 0 prints one JSON object on stdout:
//   {"ranks": N, "reps": R, "warmup": W, "flush_mib": M, "mpi": "...", "results": [
//     {"count": C, "bytes": B, "median_s": .., "min_s": .., "mean_s": .., "p90_s": ..,
//      "algbw_GBps": .., "busbw_GBps": .., "sum_ok": true}, ...]}
// (GB = 1e9 bytes; bandwidths use the median time.)
#include <mpi.h>

#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "mpi_timing.h"

namespace {

void usage_error(int rank, const std::string& msg) {
  if (rank == 0)
    std::fprintf(stderr,
                 "bench_allreduce: %s\nusage: mpirun -np N bench_allreduce [--reps R] "
                 "[--warmup W] [--flush-mib M] COUNT...\n",
                 msg.c_str());
  MPI_Finalize();
  std::exit(2);
}

// An integer in [min, max], or -1.
long long parse_int(const char* s, long long min, long long max) {
  if (*s == '\0') return -1;
  char* end = nullptr;
  const long long v = std::strtoll(s, &end, 10);
  if (*end != '\0' || v < min || v > max) return -1;
  return v;
}

double quantile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  if (q == 0.5) return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
  return v[std::min(n - 1, size_t(q * double(n)))];
}

}  // namespace

int main(int argc, char** argv) {
  const auto [rank, size] = mt::bench::start_mpi(&argc, &argv);

  long long reps = 200, warmup = 20, flush_mib = 0;
  std::vector<int> counts;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--reps" || a == "--warmup" || a == "--flush-mib") {
      if (i + 1 >= argc) usage_error(rank, a + " needs a value");
      const long long min = a == "--reps" ? 1 : 0, max = a == "--flush-mib" ? 65536 : 1000000;
      const long long v = parse_int(argv[++i], min, max);
      if (v < 0)
        usage_error(rank, a + " must be an integer in [" + std::to_string(min) + ", " +
                              std::to_string(max) + "], got '" + argv[i] + "'");
      (a == "--reps" ? reps : a == "--warmup" ? warmup : flush_mib) = v;
    } else {
      const long long c = parse_int(argv[i], 1, INT_MAX);
      if (c < 0) usage_error(rank, "COUNT must be an integer in [1, INT_MAX], got '" + a + "'");
      counts.push_back(int(c));
    }
  }
  if (counts.empty()) usage_error(rank, "no COUNT given");

  char version[MPI_MAX_LIBRARY_VERSION_STRING] = {};
  int version_len = 0;
  MPI_Get_library_version(version, &version_len);
  std::string mpi(version, size_t(version_len));
  mpi = mpi.substr(0, mpi.find_first_of("\n,"));

  if (rank == 0)
    std::printf(
        "{\"ranks\": %d, \"reps\": %lld, \"warmup\": %lld, \"flush_mib\": %lld, \"mpi\": \"%s\", "
        "\"results\": [",
        size, reps, warmup, flush_mib, mpi.c_str());
  std::vector<float> flush(static_cast<size_t>(flush_mib) << 18);  // M MiB of floats
  double flush_sink = 0;
  const size_t nc = counts.size();
  std::vector<std::vector<float>> bufs(nc);
  std::vector<std::vector<double>> times(nc, std::vector<double>(static_cast<size_t>(reps)));
  for (size_t c = 0; c < nc; ++c) bufs[c].resize(size_t(counts[c]));
  // Repetitions outermost, sizes inside: a burst of other work on the machine
  // then hits every size alike instead of all repetitions of one size.
  for (long long r = -warmup; r < reps; ++r) {
    for (size_t c = 0; c < nc; ++c) {
      std::vector<float>& buf = bufs[c];
      if (!flush.empty()) {
        std::fill(flush.begin(), flush.end(), float(r));
        flush_sink += flush[size_t(r + warmup) % flush.size()];
      }
      std::fill(buf.begin(), buf.end(), 1.0f);
      MPI_Barrier(MPI_COMM_WORLD);
      const double start = MPI_Wtime();
      MPI_Allreduce(MPI_IN_PLACE, buf.data(), counts[c], MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
      const double t = MPI_Wtime() - start;
      if (r >= 0) times[c][size_t(r)] = t;
    }
  }
  bool ok = true;
  for (size_t c = 0; c < nc; ++c) {
    const int n = counts[c];
    // Every element of the last sum is the number of ranks.
    const bool sum_ok =
        std::all_of(bufs[c].begin(), bufs[c].end(), [&](float x) { return x == float(size); });
    int bad = sum_ok ? 0 : 1, any_bad = 0;
    MPI_Allreduce(&bad, &any_bad, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    ok = ok && any_bad == 0;
    // A repetition lasts as long as its slowest rank.
    MPI_Allreduce(MPI_IN_PLACE, times[c].data(), int(reps), MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    if (rank != 0) continue;
    const double bytes = 4.0 * double(n);
    const double median = quantile(times[c], 0.5);
    double mean = 0;
    for (double t : times[c]) mean += t;
    mean /= double(reps);
    const double algbw = bytes / median / 1e9;
    const double busbw = algbw * 2.0 * double(size - 1) / double(size);
    std::printf(
        "%s\n  {\"count\": %d, \"bytes\": %.0f, \"median_s\": %.9g, \"min_s\": %.9g, "
        "\"mean_s\": %.9g, \"p90_s\": %.9g, \"algbw_GBps\": %.6g, \"busbw_GBps\": %.6g, "
        "\"sum_ok\": %s}",
        c ? "," : "", n, bytes, median, quantile(times[c], 0.0), mean, quantile(times[c], 0.9),
        algbw, busbw, any_bad ? "false" : "true");
  }
  if (rank == 0) {
    std::printf("]}\n");
    std::fflush(stdout);
    if (!ok) std::fprintf(stderr, "bench_allreduce: error: an all-reduce gave a wrong sum\n");
  }
  if (flush_sink < 0) std::fprintf(stderr, "%g\n", flush_sink);  // keeps the flush writes
  MPI_Finalize();
  return ok ? 0 : 1;
}
