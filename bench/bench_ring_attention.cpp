// bench_ring_attention: context parallelism's ring attention
// (parallel/ring_attention.h) over the world, CP = the world's size, against
// CP 1 on the same whole sequence, float32 (docs/benchmarks.md, "Context
// parallelism").
//
//   mpirun -np CP bench_ring_attention [--reps R] [--warmup W] S H G HD
//
// One sample of S tokens, H query heads and G key/value heads of HD; each
// rank holds its 2 chunks, S / CP rows. Per repetition, after a barrier, the
// slowest rank's time of, forward and backward apart:
//   cp1:      the plain kernel over the whole sequence, on every rank at once
//             (each its own CP 1), so that the machine is as loaded as
//             under the ring;
//   ring:     RingAttention over the world, messages overlapped with compute;
//   compute:  the ring's kernel calls alone: each of the CP blocks (with this
//             rank's own k, v standing in for the block, under the block's
//             positions: the same masks, the same work), the merges, the
//             gradient sums, and no message;
//   messages: the ring's messages alone: CP - 1 steps of passing a k, v
//             block and (backward) CP steps of passing a [dk | dv]
//             accumulator, as the ring sends them, and no compute.
// hidden = (compute + messages - ring) / messages: the share of the message
// time the overlapped step does not pay (1: all of it hidden, 0: none).
// Also each call's wait_seconds, the time the ring blocked in its waits.
// Rank 0 prints one JSON object.
#include <mpi.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <limits>
#include <random>
#include <vector>

#include "mpi_timing.h"
#include "parallel/ring_attention.h"
#include "runtime/communicator.h"
#include "runtime/cpu_backend.h"

using mt::bench::median;
using mt::bench::timed;

int main(int argc, char** argv) {
  const auto [rank, cp] = mt::bench::start_mpi(&argc, &argv);
  const mt::bench::BenchArgs args = mt::bench::parse_bench_args(argc, argv);
  const std::vector<long long>& pos = args.positional;
  if (pos.size() != 4 || args.reps < 1 || args.warmup < 0 || cp < 2 || pos[0] % (2 * cp) != 0 || pos[1] < 1 ||
      pos[2] < 1 || pos[1] % pos[2] != 0 || pos[3] < 1)
    return mt::bench::usage_exit(rank, "mpirun -np CP (>= 2) bench_ring_attention [--reps R] [--warmup W] S H G HD "
                                       "(S divisible by 2 CP, H by G)");
  const int S = int(pos[0]), H = int(pos[1]), G = int(pos[2]), hd = int(pos[3]), rows = S / cp;
  const size_t qw = size_t(H) * hd, kw = size_t(G) * hd;

  auto be = mt::make_cpu_backend<float>();
  mt::MpiCommunicator world(MPI_COMM_WORLD);
  world.set_name("CP group");
  const mt::ProcessGroup group{&world, rank, cp};

  // The whole sequence, the same on every rank, and this rank's rows.
  std::mt19937 rng(11);
  std::uniform_real_distribution<float> u(-1, 1);
  auto rnd = [&](size_t n) {
    mt::DeviceBuffer<float> d(*be, n);
    std::vector<float> h(n);
    for (float& x : h) x = u(rng);
    be->from_host(d.data(), h.data(), n);
    return d;
  };
  mt::DeviceBuffer<float> q = rnd(S * qw), k = rnd(S * kw), v = rnd(S * kw), dout = rnd(S * qw);
  mt::DeviceBuffer<float> out(*be, S * qw), lse(*be, size_t(H) * S), dq(*be, S * qw), dk(*be, S * kw), dv(*be, S * kw);
  auto mine = [&](const mt::DeviceBuffer<float>& whole, size_t width) {
    mt::DeviceBuffer<float> d(*be, rows * width);
    mt::cp_rows_of_sample(d.data(), whole.data(), rank, cp, S, width);  // CPU backend: host memory
    return d;
  };
  mt::DeviceBuffer<float> ql = mine(q, qw), kl = mine(k, kw), vl = mine(v, kw), doutl = mine(dout, qw);
  mt::DeviceBuffer<float> outl(*be, rows * qw), lsel(*be, size_t(H) * rows), dql(*be, rows * qw),
      dkl(*be, rows * kw), dvl(*be, rows * kw);

  mt::AttentionShape whole;
  whole.seq = S;
  whole.heads = H;
  whole.kv_heads = G;
  whole.head_dim = hd;
  whole.heads_per_kv = H / G;
  mt::AttentionShape local = whole;
  local.seq = rows;
  mt::RingAttention<float> ring(*be, group, local);

  // The ring's compute alone, as parallel/ring_attention.cpp calls it.
  std::vector<mt::DeviceBuffer<float, int32_t>> positions;
  for (int r = 0; r < cp; ++r) {
    const std::vector<int32_t> p = mt::cp_chunk_positions(r, cp, S);
    positions.emplace_back(*be, p.size());
    be->int_from_host(positions.back().data(), p.data(), p.size());
  }
  mt::DeviceBuffer<float> block_out(*be, rows * qw), block_lse(*be, size_t(H) * rows), part(*be, 2 * rows * kw),
      grads(*be, 2 * rows * kw);
  mt::AttentionShape block = local;
  block.kv_seq = rows;
  block.q_pos = positions[rank].data();
  auto compute_forward = [&] {
    be->fill(outl.data(), 0.0f, outl.size());
    be->fill(lsel.data(), -std::numeric_limits<float>::infinity(), lsel.size());
    for (int step = 0; step < cp; ++step) {
      block.k_pos = positions[(rank - step + cp) % cp].data();
      be->attention_forward(block_out.data(), block_lse.data(), ql.data(), kl.data(), vl.data(), block);
      be->attention_merge(outl.data(), lsel.data(), block_out.data(), block_lse.data(), local);
    }
  };
  auto compute_backward = [&] {
    const size_t n = rows * kw;
    for (int step = 0; step < cp; ++step) {
      float* share = step == 0 ? grads.data() : part.data();
      be->fill(share, 0.0f, 2 * n);
      block.k_pos = positions[(rank - step + cp) % cp].data();
      be->attention_backward(dql.data(), share, share + n, doutl.data(), outl.data(), lsel.data(), ql.data(), kl.data(),
                             vl.data(), block);
      if (step > 0) be->axpy(2 * n, 1.0f, share, grads.data());
    }
    be->axpy(n, 1.0f, grads.data(), dkl.data());
    be->axpy(n, 1.0f, grads.data() + n, dvl.data());
  };
  // The ring's messages alone: k and v to the next rank, the previous
  // rank's into the other buffer; backward, the accumulators too.
  const int next = (rank + 1) % cp, prev = (rank + cp - 1) % cp;
  mt::DeviceBuffer<float> kv_in(*be, 2 * rows * kw), grads_in(*be, 2 * rows * kw);
  auto messages = [&](bool backward) {
    const size_t n = rows * kw;
    for (int step = 0; step < cp; ++step) {
      std::vector<mt::Request> r;
      if (step + 1 < cp) {
        r.push_back(world.irecv(kv_in.data(), n, mt::DType::F32, prev, 1));
        r.push_back(world.irecv(kv_in.data() + n, n, mt::DType::F32, prev, 1));
        r.push_back(world.isend(kl.data(), n, mt::DType::F32, next, 1));
        r.push_back(world.isend(vl.data(), n, mt::DType::F32, next, 1));
      }
      if (backward) {
        r.push_back(world.irecv(grads_in.data(), 2 * n, mt::DType::F32, prev, 2));
        r.push_back(world.isend(grads.data(), 2 * n, mt::DType::F32, next, 2));
      }
      for (mt::Request& x : r) world.wait(x);
    }
  };

  std::vector<double> cp1_f, cp1_b, ring_f, ring_b, comp_f, comp_b, msg_f, msg_b, wait_f, wait_b;
  for (int rep = 0; rep < args.warmup + args.reps; ++rep) {
    const double a = timed([&] { be->attention_forward(out.data(), lse.data(), q.data(), k.data(), v.data(), whole); });
    const double b = timed([&] {
      be->attention_backward(dq.data(), dk.data(), dv.data(), dout.data(), out.data(), lse.data(), q.data(), k.data(),
                             v.data(), whole);
    });
    double w0 = ring.wait_seconds;
    const double c = timed([&] { ring.forward(outl.data(), lsel.data(), ql.data(), kl.data(), vl.data(), local); });
    double w1 = ring.wait_seconds;
    const double d = timed([&] {
      ring.backward(dql.data(), dkl.data(), dvl.data(), doutl.data(), outl.data(), lsel.data(), ql.data(), kl.data(),
                    vl.data(), local);
    });
    double w2 = ring.wait_seconds;
    const double e = timed(compute_forward), f = timed(compute_backward);
    const double g = timed([&] { messages(false); }), h = timed([&] { messages(true); });
    double waits[2] = {w1 - w0, w2 - w1};  // the slowest rank's
    MPI_Allreduce(MPI_IN_PLACE, waits, 2, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    if (rep < args.warmup) continue;
    cp1_f.push_back(a);
    cp1_b.push_back(b);
    ring_f.push_back(c);
    ring_b.push_back(d);
    comp_f.push_back(e);
    comp_b.push_back(f);
    msg_f.push_back(g);
    msg_b.push_back(h);
    wait_f.push_back(waits[0]);
    wait_b.push_back(waits[1]);
  }

  if (rank == 0) {
    auto pass = [&](const std::vector<double>& cp1, const std::vector<double>& r, const std::vector<double>& comp,
                    const std::vector<double>& msg, const std::vector<double>& wait) {
      const double m_cp1 = median(cp1), m_ring = median(r), m_comp = median(comp), m_msg = median(msg);
      return nlohmann::json{{"cp1_s", m_cp1},
                            {"ring_s", m_ring},
                            {"speedup", m_cp1 / m_ring},
                            {"compute_s", m_comp},
                            {"messages_s", m_msg},
                            {"ring_wait_s", median(wait)},
                            {"hidden", std::clamp((m_comp + m_msg - m_ring) / m_msg, 0.0, 1.0)}};
    };
    const double kv_bytes = 2.0 * rows * kw * sizeof(float);
    const nlohmann::json json = {{"cp", cp},
                                 {"S", S},
                                 {"H", H},
                                 {"G", G},
                                 {"hd", hd},
                                 {"reps", args.reps},
                                 {"kv_block_bytes", kv_bytes},
                                 {"forward", pass(cp1_f, ring_f, comp_f, msg_f, wait_f)},
                                 {"backward", pass(cp1_b, ring_b, comp_b, msg_b, wait_b)}};
    std::printf("%s\n", json.dump().c_str());
  }
  MPI_Finalize();
  return 0;
}
