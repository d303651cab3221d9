// Context parallelism's ring attention (parallel/ring_attention.h) against
// one rank's attention over the whole sequence. Under mpirun with 2 and 4
// ranks (tests/CMakeLists.txt) the world is the CP group: every rank builds
// the whole sequence's q, k, v from one seed, runs the plain kernel over it
// as the reference, runs the ring on its own chunks and compares its rows.
// (A test process of one rank runs the same checks with a ring of one.)
#include <gtest/gtest.h>
#include <mpi.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <random>
#include <set>
#include <vector>

#include "parallel/ring_attention.h"
#include "runtime/check.h"
#include "runtime/communicator.h"

namespace mt {
namespace {

// B samples of S tokens (S divides by 2 CP for CP = 1, 2 and 4).
struct RingCase {
  const char* name;
  int B, S, H, G, hd;
  bool documents = false;
};

void PrintTo(const RingCase& c, std::ostream* os) { *os << c.name; }

// The world as the CP group.
struct World {
  MpiCommunicator comm{MPI_COMM_WORLD};
  ProcessGroup group() { return {&comm, comm.rank(), comm.size()}; }
};

// Documents of sample b (doc_start [B*S]): starts at 0, 50, 120, 220 and
// 300 in sample 0 and at 0, 30, 170 and 260 in sample 1, so that at S = 384
// they cross the borders of chunks of 96 (CP 2) and 48 (CP 4); at other
// lengths every 5th, 11th, ... token, as far as they reach.
std::vector<int32_t> document_starts(int B, int S) {
  const std::vector<std::vector<int>> starts = {{0, 50, 120, 220, 300}, {0, 30, 170, 260}};
  std::vector<int32_t> doc(size_t(B) * S);
  for (int b = 0; b < B; ++b) {
    std::vector<int> mine = starts[size_t(b) % 2];
    if (S < 384)
      for (int& s : mine) s = s * S / 384;
    int first = 0;
    for (int i = 0; i < S; ++i) {
      for (int s : mine)
        if (s <= i) first = s;
      doc[size_t(b) * S + i] = first;
    }
  }
  return doc;
}

// The whole sequence's inputs, the same on every rank: q and k in [-2, 2]
// (scores of a few units, an uneven softmax), v, dO and the gradients'
// starting values (gradient kernels accumulate) in [-1, 1].
template <typename T>
struct Inputs {
  std::vector<T> q, k, v, dout, dq, dk, dv;
  std::vector<int32_t> starts;
};
template <typename T>
Inputs<T> inputs(const RingCase& c, bool zero_grads) {
  std::mt19937 rng(1234);
  auto rnd = [&](size_t n, double lo, double hi) {
    std::uniform_real_distribution<double> u(lo, hi);
    std::vector<T> x(n);
    for (T& e : x) e = T(u(rng));
    return x;
  };
  const size_t nq = size_t(c.B) * c.S * c.H * c.hd, nk = size_t(c.B) * c.S * c.G * c.hd;
  Inputs<T> in{rnd(nq, -2, 2), rnd(nk, -2, 2), rnd(nk, -1, 1), rnd(nq, -1, 1), rnd(nq, -1, 1), rnd(nk, -1, 1),
               rnd(nk, -1, 1), document_starts(c.B, c.S)};
  if (zero_grads) {
    std::fill(in.dq.begin(), in.dq.end(), T(0));
    std::fill(in.dk.begin(), in.dk.end(), T(0));
    std::fill(in.dv.begin(), in.dv.end(), T(0));
  }
  return in;
}

// Host values on a backend's device (T on be, Acc on be.acc(), int32 rows).
template <typename B, typename E>
DeviceBuffer<B, E> upload(Backend<B>& be, const std::vector<E>& host) {
  DeviceBuffer<B, E> d(be, host.size());
  if constexpr (std::is_same_v<E, int32_t>)
    be.int_from_host(d.data(), host.data(), host.size());
  else
    be.from_host(d.data(), host.data(), host.size());
  return d;
}
template <typename B>
std::vector<B> download(Backend<B>& be, const DeviceBuffer<B>& d) {
  std::vector<B> h(d.size());
  be.to_host(h.data(), d.data(), d.size());
  return h;
}

// CP rank r's rows of every sample of x [B*S, width] (rows), or of every
// (sample, head) of an lse [B, H, S] (B*H "samples" of width 1).
template <typename E>
std::vector<E> rows_of(const std::vector<E>& x, int samples, int S, size_t width, int r, int P) {
  std::vector<E> y(x.size() / P);
  const size_t rows = size_t(S / P);
  for (int b = 0; b < samples; ++b)
    cp_rows_of_sample(y.data() + b * rows * width, x.data() + size_t(b) * S * width, r, P, S, width);
  return y;
}

// Attention's results: out and lse after forward, dq, dk, dv after backward.
template <typename T>
struct Results {
  std::vector<T> out;
  std::vector<acc_t<T>> lse;
  std::vector<T> dq, dk, dv;
};

// Forward, then backward from `given`'s out and lse (whole-sequence
// arrays) when given, else from forward's own, on this rank's rows through
// the ring over cp (a group of one: the whole sequence, the plain kernel).
template <typename T>
Results<T> run(Backend<T>& be, const ProcessGroup& cp, const RingCase& c, const Inputs<T>& in,
               const Results<T>* given = nullptr) {
  using Acc = acc_t<T>;
  const int P = cp.size, r = cp.rank, S = c.S, rows = S / P;
  const size_t qw = size_t(c.H) * c.hd, kw = size_t(c.G) * c.hd;
  auto mine = [&](const auto& x, size_t width) { return rows_of(x, c.B, S, width, r, P); };
  AttentionShape a;
  a.batch = c.B;
  a.seq = rows;
  a.heads = c.H;
  a.kv_heads = c.G;
  a.head_dim = c.hd;
  a.heads_per_kv = c.H / c.G;
  DeviceBuffer<T, int32_t> starts = upload(be, mine(in.starts, 1));
  if (c.documents) a.doc_start = starts.data();
  RingAttention<T> ring(be, cp, a, 3);
  DeviceBuffer<T> q = upload(be, mine(in.q, qw)), k = upload(be, mine(in.k, kw)), v = upload(be, mine(in.v, kw));
  DeviceBuffer<T> out(be, q.size());
  DeviceBuffer<Acc> lse(be.acc(), size_t(c.B) * c.H * rows);
  ring.forward(out.data(), lse.data(), q.data(), k.data(), v.data(), a, 1);
  Results<T> res{download(be, out), download(be.acc(), lse), {}, {}, {}};
  if (given) {
    be.from_host(out.data(), mine(given->out, qw).data(), out.size());
    be.acc().from_host(lse.data(), rows_of(given->lse, c.B * c.H, S, 1, r, P).data(), lse.size());
  }
  DeviceBuffer<T> dq = upload(be, mine(in.dq, qw)), dk = upload(be, mine(in.dk, kw)), dv = upload(be, mine(in.dv, kw));
  DeviceBuffer<T> dout = upload(be, mine(in.dout, qw));
  ring.backward(dq.data(), dk.data(), dv.data(), dout.data(), out.data(), lse.data(), q.data(), k.data(), v.data(), a,
                1);
  res.dq = download(be, dq);
  res.dk = download(be, dk);
  res.dv = download(be, dv);
  return res;
}

// This rank's rows of the whole sequence's results.
template <typename T>
Results<T> rows_of(const Results<T>& x, const RingCase& c, int r, int P) {
  const size_t qw = size_t(c.H) * c.hd, kw = size_t(c.G) * c.hd;
  return {rows_of(x.out, c.B, c.S, qw, r, P), rows_of(x.lse, c.B * c.H, c.S, 1, r, P), rows_of(x.dq, c.B, c.S, qw, r, P),
          rows_of(x.dk, c.B, c.S, kw, r, P), rows_of(x.dv, c.B, c.S, kw, r, P)};
}

template <typename E>
double largest(const std::vector<E>& x) {
  double m = 0;
  for (E e : x) m = std::max(m, std::abs(double(e)));
  return m;
}
template <typename A, typename B>
double deviation(const std::vector<A>& a, const std::vector<B>& b) {
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(double(a[i]) - double(b[i])));
  return m;
}

// Every element within 1e-12 of the reference, relative to max(1, |ref|):
// thousands of double roundings, where a wrong block or mask is off by O(1).
template <typename E>
void expect_near_double(const std::vector<E>& ring, const std::vector<E>& ref, const char* what) {
  ASSERT_EQ(ring.size(), ref.size()) << what;
  int misses = 0;
  for (size_t i = 0; i < ref.size(); ++i)
    if (!(std::abs(double(ring[i]) - double(ref[i])) <= 1e-12 * std::max(1.0, std::abs(double(ref[i])))) &&
        ++misses <= 5)
      ADD_FAILURE() << what << " [" << i << "]: " << double(ring[i]) << " against " << double(ref[i]);
  EXPECT_EQ(misses, 0) << what << ": elements off";
}

const RingCase kCases[] = {
    {"Mha", 1, 384, 4, 4, 16},
    {"Gqa", 1, 384, 4, 2, 16},
    {"Mqa", 1, 384, 4, 1, 16},
    {"Documents", 2, 384, 4, 2, 16, true},
    {"TwoSamples", 2, 384, 4, 2, 16},
};

class RingAttentionDouble : public ::testing::TestWithParam<RingCase> {};
class RingAttentionFloat : public ::testing::TestWithParam<RingCase> {};
class RingAttentionBf16 : public ::testing::TestWithParam<RingCase> {};

// float64, forward into backward end to end, gradients accumulating onto
// non-zero values: the ring's rows equal the one-rank run's.
TEST_P(RingAttentionDouble, RowsMatchOneRankAttention) {
  const RingCase& c = GetParam();
  World world;
  const ProcessGroup cp = world.group();
  auto be = make_cpu_backend<double>();
  const Inputs<double> in = inputs<double>(c, false);
  const Results<double> whole = rows_of(run(*be, ProcessGroup{}, c, in), c, cp.rank, cp.size);
  const Results<double> ring = run(*be, cp, c, in);
  expect_near_double(ring.out, whole.out, "out");
  expect_near_double(ring.lse, whole.lse, "lse");
  expect_near_double(ring.dq, whole.dq, "dq");
  expect_near_double(ring.dk, whole.dk, "dk");
  expect_near_double(ring.dv, whole.dv, "dv");
}

// float32 (and bf16) against float64 (the kernel over the whole sequence
// on the same inputs), bounded by the one-rank run's deviation in the same
// precision, measured here (dev_one, the largest over the tensor), and the
// roundings the ring adds, each of the tensor's largest value (mag), in T
// (eps_t) or in Acc (eps_acc; the same as eps_t in float32):
//   lse: each block's lse is the kernel's over fewer keys (its error like
//     the one-rank run's: 2 dev_one, two draws of rounding), then each of P
//     merges rounds lse' once: + P eps_acc mag;
//   out: likewise 2 dev_one; each block's output is rounded to T when
//     stored (+ P eps_t mag) and its merge rounds two weights, two products
//     and a sum (+ 5 P eps_acc mag), the running output rounded to T at the
//     end when T is not Acc (+ eps_t mag); the weights exp(lse_b - lse') move
//     by the errors of the two lse: + 2 bound(lse) mag;
//   dq, dk, dv (the backward from the float64 reference's out and lse,
//     rounded, in both runs, so that it is checked apart from the forward):
//     2 dev_one; dq rounds each block's share into dq (+ P eps_t mag); dk
//     and dv round each rank's share, its add into the travelling sum, and
//     the add at home (+ (2 P + 1) eps_t mag).
template <typename T>
void check_within_rounding(const RingCase& c) {
  using Acc = acc_t<T>;
  World world;
  const ProcessGroup cp = world.group();
  const int P = cp.size, r = cp.rank;
  const double eps_t = std::is_same_v<T, bf16> ? 1.0 / 256 : FLT_EPSILON, eps_acc = FLT_EPSILON;
  auto be = make_cpu_backend<T>();
  auto be64 = make_cpu_backend<double>();
  const Inputs<T> in = inputs<T>(c, true);
  auto wide = [](const std::vector<T>& x) {
    std::vector<double> y;
    for (T e : x) y.push_back(double(e));
    return y;
  };
  const Inputs<double> in64{wide(in.q),  wide(in.k),  wide(in.v), wide(in.dout),
                            wide(in.dq), wide(in.dk), wide(in.dv), in.starts};
  const Results<double> ref = run(*be64, ProcessGroup{}, c, in64);
  Results<T> given;  // the reference's out and lse, rounded as stored
  for (double x : ref.out) given.out.push_back(T(x));
  for (double x : ref.lse) given.lse.push_back(Acc(x));
  const Results<T> one = run(*be, ProcessGroup{}, c, in, &given);
  const Results<T> ring = run(*be, cp, c, in, &given);
  const Results<double> mine = rows_of(ref, c, r, P);

  // extra: the ring's own roundings, in units of mag.
  auto check = [&](const auto& ring_x, const auto& mine_x, const auto& one_x, const auto& ref_x, double extra,
                   const char* what) {
    const double dev_one = deviation(one_x, ref_x), mag = largest(ref_x);
    const double bound = 2 * dev_one + extra * mag, dev = deviation(ring_x, mine_x);
    EXPECT_LE(dev, bound) << what << ": the one-rank run deviates by " << dev_one << " of " << mag;
    return bound;
  };
  const double lse_bound = check(ring.lse, mine.lse, one.lse, ref.lse, P * eps_acc, "lse");
  const double final_rounding = std::is_same_v<T, Acc> ? 0.0 : eps_t;
  check(ring.out, mine.out, one.out, ref.out, P * eps_t + 5 * P * eps_acc + final_rounding + 2 * lse_bound, "out");
  check(ring.dq, mine.dq, one.dq, ref.dq, P * eps_t, "dq");
  check(ring.dk, mine.dk, one.dk, ref.dk, (2.0 * P + 1) * eps_t, "dk");
  check(ring.dv, mine.dv, one.dv, ref.dv, (2.0 * P + 1) * eps_t, "dv");
}

TEST_P(RingAttentionFloat, RowsMatchOneRankAttentionWithinItsRounding) { check_within_rounding<float>(GetParam()); }
TEST_P(RingAttentionBf16, RowsMatchOneRankAttentionWithinItsRounding) { check_within_rounding<bf16>(GetParam()); }

INSTANTIATE_TEST_SUITE_P(Cases, RingAttentionDouble, ::testing::ValuesIn(kCases),
                         [](const auto& info) { return std::string(info.param.name); });
INSTANTIATE_TEST_SUITE_P(Cases, RingAttentionFloat, ::testing::ValuesIn(kCases),
                         [](const auto& info) { return std::string(info.param.name); });
INSTANTIATE_TEST_SUITE_P(Cases, RingAttentionBf16, ::testing::ValuesIn(kCases),
                         [](const auto& info) { return std::string(info.param.name); });

// The gradients of loss = sum(out * W) (W fixed, random) through the ring,
// in float64, against central differences of that loss, each evaluation a
// ring forward pass on every rank and a sum over the ranks. Step 1e-6:
// truncation near h^2 = 1e-12, cancellation near eps |loss| / h, 1e-9 at a
// loss near 10; 1e-7 of max(1, |gradient|) holds both.
TEST(RingAttention, GradientsMatchCentralDifferencesInDouble) {
  const RingCase c{"small", 1, 16, 2, 1, 4, true};
  World world;
  const ProcessGroup cp = world.group();
  const int P = cp.size, r = cp.rank, rows = c.S / P;
  const size_t qw = size_t(c.H) * c.hd, kw = size_t(c.G) * c.hd;
  auto be = make_cpu_backend<double>();
  Inputs<double> in = inputs<double>(c, true);
  in.starts = {0, 0, 0, 3, 3, 3, 3, 3, 3, 9, 9, 9, 9, 9, 14, 14};  // across chunks of 2, 4 and 8
  const std::vector<double> w = in.dout;                             // the loss's weights, as dO
  AttentionShape a;
  a.batch = 1;
  a.seq = rows;
  a.heads = c.H;
  a.kv_heads = c.G;
  a.head_dim = c.hd;
  a.heads_per_kv = c.H / c.G;
  DeviceBuffer<double, int32_t> starts = upload(*be, rows_of(in.starts, 1, c.S, 1, r, P));
  a.doc_start = starts.data();
  RingAttention<double> ring(*be, cp, a);
  const std::vector<double> w_mine = rows_of(w, 1, c.S, qw, r, P);
  DeviceBuffer<double> out(*be, size_t(rows) * qw), lse(*be, size_t(c.H) * rows);
  auto loss = [&](const std::vector<double>& q, const std::vector<double>& k, const std::vector<double>& v) {
    DeviceBuffer<double> qd = upload(*be, rows_of(q, 1, c.S, qw, r, P)), kd = upload(*be, rows_of(k, 1, c.S, kw, r, P)),
                         vd = upload(*be, rows_of(v, 1, c.S, kw, r, P));
    ring.forward(out.data(), lse.data(), qd.data(), kd.data(), vd.data(), a);
    const std::vector<double> o = download(*be, out);
    double l = 0;
    for (size_t i = 0; i < o.size(); ++i) l += o[i] * w_mine[i];
    cp.all_reduce_sum(&l, 1);
    return l;
  };
  const Results<double> grads = run(*be, cp, c, in);  // dO = w, gradients from zero
  const double h = 1e-6;
  for (int which = 0; which < 3; ++which) {
    std::vector<double> x[3] = {in.q, in.k, in.v};
    const size_t width = which == 0 ? qw : kw;
    std::vector<double> fd(x[which].size());
    for (size_t e = 0; e < fd.size(); ++e) {
      const double x0 = x[which][e];
      x[which][e] = x0 + h;
      const double up = loss(x[0], x[1], x[2]);
      x[which][e] = x0 - h;
      const double down = loss(x[0], x[1], x[2]);
      x[which][e] = x0;
      fd[e] = (up - down) / (2 * h);
    }
    const std::vector<double> expected = rows_of(fd, 1, c.S, width, r, P);
    const std::vector<double>& got = which == 0 ? grads.dq : which == 1 ? grads.dk : grads.dv;
    const char* name = which == 0 ? "dq" : which == 1 ? "dk" : "dv";
    for (size_t i = 0; i < got.size(); ++i)
      EXPECT_NEAR(got[i], expected[i], 1e-7 * std::max(1.0, std::abs(expected[i]))) << name << " [" << i << "]";
  }
}

// A group of one is the plain kernel, bit for bit (float32, documents).
TEST(RingAttention, GroupOfOneIsPlainAttentionBitForBit) {
  const RingCase c{"one", 2, 200, 4, 2, 8, true};
  auto be = make_cpu_backend<float>();
  const Inputs<float> in = inputs<float>(c, false);
  const Results<float> ring = run(*be, ProcessGroup{}, c, in);
  AttentionShape a;
  a.batch = c.B;
  a.seq = c.S;
  a.heads = c.H;
  a.kv_heads = c.G;
  a.head_dim = c.hd;
  a.heads_per_kv = c.H / c.G;
  DeviceBuffer<float, int32_t> starts = upload(*be, in.starts);
  a.doc_start = starts.data();
  DeviceBuffer<float> q = upload(*be, in.q), k = upload(*be, in.k), v = upload(*be, in.v), out(*be, in.q.size());
  DeviceBuffer<float> dq = upload(*be, in.dq), dk = upload(*be, in.dk), dv = upload(*be, in.dv),
                      dout = upload(*be, in.dout);
  DeviceBuffer<float> lse(*be, size_t(c.B) * c.H * c.S);
  be->attention_forward(out.data(), lse.data(), q.data(), k.data(), v.data(), a);
  be->attention_backward(dq.data(), dk.data(), dv.data(), dout.data(), out.data(), lse.data(), q.data(), k.data(),
                         v.data(), a);
  EXPECT_EQ(ring.out, download(*be, out));
  EXPECT_EQ(ring.lse, download(*be, lse));
  EXPECT_EQ(ring.dq, download(*be, dq));
  EXPECT_EQ(ring.dk, download(*be, dk));
  EXPECT_EQ(ring.dv, download(*be, dv));
}

// The load-balanced layout: every position once over the ranks, each
// rank's ascending, chunks r and 2 CP - 1 - r; the loader's cut takes those
// rows; a length that does not divide is named.
TEST(RingAttention, ChunksCoverEverySampleOnce) {
  for (int P : {1, 2, 3, 4})
    for (int S : {2 * P, 8 * P, 24 * P}) {
      std::vector<int> seen(static_cast<size_t>(S), 0);
      const int c = S / (2 * P);
      for (int r = 0; r < P; ++r) {
        const std::vector<int32_t> pos = cp_chunk_positions(r, P, S);
        ASSERT_EQ(pos.size(), size_t(2 * c));
        EXPECT_TRUE(std::is_sorted(pos.begin(), pos.end()));
        EXPECT_EQ(pos.front(), r * c);
        EXPECT_EQ(pos.back(), (2 * P - r) * c - 1);
        for (int32_t p : pos) ++seen[size_t(p)];
        std::vector<int32_t> tokens(static_cast<size_t>(S)), mine(pos.size());
        for (int i = 0; i < S; ++i) tokens[size_t(i)] = 1000 + i;
        cp_rows_of_sample(mine.data(), tokens.data(), r, P, S);
        for (size_t i = 0; i < pos.size(); ++i) EXPECT_EQ(mine[i], 1000 + pos[i]);
      }
      EXPECT_EQ(seen, std::vector<int>(size_t(S), 1)) << "CP " << P << ", S " << S;
    }
  EXPECT_THROW(cp_chunk_positions(0, 2, 6), Error);
}

// Rings of different ids, micro-batches (mod 8) and messages never share a
// tag, and every tag is one MPI allows.
TEST(RingAttention, TagsTellRingsMicroBatchesAndMessagesApart) {
  std::set<int> tags;
  for (int id = 0; id < kMaxRingIds; ++id)
    for (int m = 0; m < 8; ++m)
      for (RingMessage what : {RingMessage::ForwardKv, RingMessage::BackwardKv, RingMessage::Grads}) {
        const int tag = ring_tag(id, m, what);
        EXPECT_TRUE(tag >= 0 && tag <= 32767) << tag;
        tags.insert(tag);
      }
  EXPECT_EQ(tags.size(), size_t(kMaxRingIds) * 8 * 3);
  EXPECT_THROW(ring_tag(kMaxRingIds, 0, RingMessage::Grads), Error);
}

}  // namespace
}  // namespace mt
