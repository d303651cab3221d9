// bench_expert_dispatch: one MoE layer's expert-parallel token movement as
// training runs it (ExpertDispatch), against plain MPI_Alltoallv calls of
// the same bytes (scripts/bench_expert_parallel.sh, docs/benchmarks.md).
//
//   mpirun -np EP bench_expert_dispatch [--reps R] [--warmup W] TOKENS D E K
//
// Every rank of the world is one EP rank with a micro-batch of TOKENS
// tokens of width D, routed to K of E experts in a fixed balanced pattern
// (token t, slot k -> expert (t K + k) mod E), so that every expert gets
// its mean share, as the planner assumes. Per repetition, after a barrier:
//   dispatch: the layer's forward (exchange the row counts, rows out,
//     outputs back and added to their tokens) and backward (dy out, dx back
//     and added), the experts being the identity;
//   plain: four MPI_Alltoallv of the same row counts (out, back, out,
//     back), on buffers already in place, and one MPI_Alltoall of the counts.
// A repetition's time is the slowest rank's; reported: the median, and the
// bytes each rank sent to the others in one repetition (ExpertDispatch's
// own count). Rank 0 prints one JSON object.
#include <mpi.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "mpi_timing.h"
#include "parallel/expert_dispatch.h"
#include "runtime/communicator.h"
#include "runtime/cpu_backend.h"

using mt::bench::median;
using mt::bench::timed;

namespace {

// The balanced routing of T tokens to E experts, K each, packed by expert
// then token as route_tokens packs it, every weight 1/K.
struct BalancedRows {
  std::vector<int32_t> token, offset{0};
  std::vector<float> weight;
  BalancedRows(int T, int E, int K) {
    std::vector<std::vector<int32_t>> per_expert(E);
    for (int t = 0; t < T; ++t)
      for (int k = 0; k < K; ++k) per_expert[(t * K + k) % E].push_back(t);
    for (const auto& rows : per_expert) {
      token.insert(token.end(), rows.begin(), rows.end());
      offset.push_back(int32_t(token.size()));
    }
    weight.assign(token.size(), 1.0f / float(K));
  }
  mt::PackedRows<float> rows() const { return {token.data(), weight.data(), &offset}; }
};

// The plain baseline: the row counts exchanged by MPI_Alltoall, then the
// same rows as the dispatch sends, in contiguous buffers by MPI_Alltoallv,
// out and back in the forward and in the backward pass.
struct PlainAllToAll {
  PlainAllToAll(const mt::ExpertExchange& ex, int d, int E, int ep, size_t kept, size_t max_rows)
      : E(E), ep(ep), send_at(ep, 0), recv_at(ep, 0), out(kept * d, 1.0f), in(max_rows * d), counts_out(E, 1),
        counts_in(E, 0) {
    for (int q = 0; q < ep; ++q) {
      send_counts.push_back(ex.send_rows[q] * d);
      recv_counts.push_back(ex.recv_rows[q] * d);
      if (q > 0) {
        send_at[q] = send_at[q - 1] + send_counts[q - 1];
        recv_at[q] = recv_at[q - 1] + recv_counts[q - 1];
      }
    }
  }
  void operator()() {
    MPI_Alltoall(counts_out.data(), E / ep, MPI_INT, counts_in.data(), E / ep, MPI_INT, MPI_COMM_WORLD);
    for (int pass = 0; pass < 2; ++pass) {
      MPI_Alltoallv(out.data(), send_counts.data(), send_at.data(), MPI_FLOAT, in.data(), recv_counts.data(),
                    recv_at.data(), MPI_FLOAT, MPI_COMM_WORLD);
      MPI_Alltoallv(in.data(), recv_counts.data(), recv_at.data(), MPI_FLOAT, out.data(), send_counts.data(),
                    send_at.data(), MPI_FLOAT, MPI_COMM_WORLD);
    }
  }
  int E, ep;
  std::vector<int> send_counts, recv_counts, send_at, recv_at;
  std::vector<float> out, in;
  std::vector<int> counts_out, counts_in;
};

std::string mpi_library() {
  char version[MPI_MAX_LIBRARY_VERSION_STRING];
  int len = 0;
  MPI_Get_library_version(version, &len);
  return std::string(version, version + std::min(len, 60));
}

}  // namespace

int main(int argc, char** argv) {
  const auto [rank, ep] = mt::bench::start_mpi(&argc, &argv);
  const mt::bench::BenchArgs args = mt::bench::parse_bench_args(argc, argv);
  const int reps = args.reps, warmup = args.warmup;
  const std::vector<long long>& positional = args.positional;
  const bool shape_ok = positional.size() == 4 && positional[0] > 0 && positional[1] > 0 && positional[2] > 1 &&
                        positional[3] >= 1 && positional[3] <= positional[2] && positional[2] % ep == 0;
  if (!shape_ok || reps < 1 || warmup < 0 || ep < 2)
    return mt::bench::usage_exit(rank, "mpirun -np EP (>= 2, dividing E) bench_expert_dispatch [--reps R] [--warmup W] "
                                       "TOKENS D E K (1 <= K <= E)");
  const int T = int(positional[0]), d = int(positional[1]), E = int(positional[2]), K = int(positional[3]);

  const BalancedRows balanced(T, E, K);
  const mt::PackedRows<float> rows = balanced.rows();
  const int kept = int(balanced.token.size());

  auto be = mt::make_cpu_backend<float>();
  mt::MpiCommunicator world(MPI_COMM_WORLD);
  const size_t max_rows = size_t(ep) * size_t(kept);
  mt::ExpertDispatch<float> dispatch(*be, E, size_t(kept), max_rows, d, mt::ProcessGroup{&world, rank, ep});
  std::vector<float> m(size_t(T) * d), x(max_rows * d), returned(size_t(kept) * d), out(size_t(T) * d),
      dm(size_t(T) * d), dy(max_rows * d), dweight(kept);
  for (size_t i = 0; i < m.size(); ++i) m[i] = float(rank + 1) * 1e-3f * float(i % 89 + 1);

  mt::ExpertExchange ex;
  auto layer = [&] {
    ex = dispatch.exchange(rows);
    dispatch.dispatch(rows, ex, m.data(), x.data());
    std::fill(out.begin(), out.end(), 0.0f);
    dispatch.combine(rows, ex, x.data(), returned.data(), out.data());  // identity experts: y = x
    dispatch.combine_backward(rows, ex, out.data(), returned.data(), dy.data(), dweight.data());
    std::fill(dm.begin(), dm.end(), 0.0f);
    dispatch.dispatch_backward(rows, ex, dy.data(), dm.data());
  };

  layer();
  PlainAllToAll plain(ex, d, E, ep, size_t(kept), max_rows);

  // Identity experts and weights summing to 1: every token's output is its
  // input, and with dout = out the gradient back is dout again.
  bool ok = true;
  for (size_t i = 0; i < m.size(); ++i) {
    ok = ok && std::abs(out[i] - m[i]) <= 1e-6f * std::abs(m[i]) + 1e-9f;
    ok = ok && std::abs(dm[i] - m[i]) <= 1e-6f * std::abs(m[i]) + 1e-9f;
  }
  int all_ok = ok;
  MPI_Allreduce(MPI_IN_PLACE, &all_ok, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);

  std::vector<double> dispatch_s, plain_s;
  dispatch.stats = {};
  for (int r = 0; r < warmup + reps; ++r) {
    if (r == warmup) dispatch.stats = {};
    const double a = timed(layer);
    const double b = timed([&] { plain(); });
    if (r < warmup) continue;
    dispatch_s.push_back(a);
    plain_s.push_back(b);
  }
  double bytes = double(dispatch.stats.bytes_sent) / reps;
  MPI_Allreduce(MPI_IN_PLACE, &bytes, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);

  if (rank == 0) {
    const double ds = median(dispatch_s), ps = median(plain_s);
    const nlohmann::json j = {{"ep", ep},
                              {"tokens", T},
                              {"d", d},
                              {"experts", E},
                              {"topk", K},
                              {"reps", reps},
                              {"results_ok", all_ok == 1},
                              {"bytes_sent_per_layer", bytes},
                              {"dispatch_median_s", ds},
                              {"plain_alltoallv_median_s", ps},
                              {"dispatch_over_plain", ds / ps},
                              {"mpi", mpi_library()}};
    std::printf("%s\n", j.dump().c_str());
  }
  MPI_Finalize();
  return all_ok ? 0 : 1;
}
