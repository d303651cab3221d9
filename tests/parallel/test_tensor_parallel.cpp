// The core test of tensor parallelism (DESIGN.md section 4): a model split
// over the TP group trains the same model as one rank. Run under mpirun with
// 2, 4 and 8 ranks (tests/CMakeLists.txt); every rank also trains the
// single-rank model itself and compares, step by step and element by element.
#include <gtest/gtest.h>
#include <mpi.h>

#include <cmath>
#include <random>

#include "model/transformer.h"
#include "optim/adamw.h"
#include "runtime/topology.h"
#include "test_util.h"

namespace mt {
namespace {

struct TpCase {
  const char* name;
  int G, E, K;
  double capacity;
};

// Heads, F and V divisible by 8; two layers.
ModelConfig tiny(const TpCase& c) {
  ModelConfig m;
  m.vocab_size = 64;
  m.hidden_size = 32;
  m.num_layers = 2;
  m.num_heads = 8;
  m.num_query_groups = c.G;
  m.ffn_hidden_size = 32;
  m.num_experts = c.E;
  m.router_topk = c.K;
  m.seq_length = 16;
  m.capacity_factor = c.capacity;
  m.aux_loss_coeff = 0.01;
  return m;
}

struct TrainingRun {
  std::vector<double> losses;
};

// `steps` optimizer steps of `micro` micro-batches each on a fixed stream of
// random tokens, the same on every rank.
template <typename T>
TrainingRun train(Transformer<T>& model, AdamW<T>& optim, const ModelConfig& cfg, int steps, int micro, int B) {
  std::mt19937 rng(99);
  TrainingRun run;
  auto& be = model.backend();
  std::vector<int32_t> tokens(size_t(B) * (cfg.seq_length + 1));
  const double ce_scale = 1.0 / (double(micro) * B * cfg.seq_length), aux_scale = 1.0 / micro;
  for (int s = 0; s < steps; ++s) {
    be.fill(model.params().grads.data(), T(0), model.params().size());
    double loss = 0;
    for (int j = 0; j < micro; ++j) {
      for (auto& t : tokens) t = int32_t(rng() % cfg.vocab_size);
      MicroBatchLoss l = model.forward_backward(tokens.data(), B, ce_scale, aux_scale);
      loss += l.ce_sum * ce_scale + l.aux * aux_scale;
    }
    model.reduce_partial_grads();
    optim.step(model.params(), 3e-3);
    run.losses.push_back(loss);
  }
  return run;
}

// Trains the case on one rank and split over every rank of the world, and
// compares losses (relative) and every element of this rank's blocks.
template <typename T>
void check_equivalence(const TpCase& c, double loss_rel_tol, double param_tol) {
  int world = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  ModelConfig cfg = tiny(c);
  if (c.G < 0) cfg.num_query_groups = world;  // G = TP
  const int steps = 20, micro = 2, B = 2;
  AdamWConfig adam;
  adam.weight_decay = 0.1;
  adam.clip_grad = 0.5;  // clipping active: the global norm must be right

  auto be = make_cpu_backend<T>();
  Transformer<T> ref(*be, cfg, B);
  AdamW<T> ref_optim(*be, adam, ref.params());
  ref.params().initialise(*be, 5);
  const TrainingRun ref_run = train(ref, ref_optim, cfg, steps, micro, B);

  Topology topo(MPI_COMM_WORLD, TopologyConfig{world, 1});
  const TensorParallel tp{&topo.tp(), topo.coords().tp, topo.tp_size()};
  Transformer<T> model(*be, cfg, B, tp);
  AdamW<T> optim(*be, adam, model.params(), tp);
  model.params().initialise(*be, 5);
  const TrainingRun run = train(model, optim, cfg, steps, micro, B);

  for (int s = 0; s < steps; ++s)
    EXPECT_LE(std::abs(run.losses[s] - ref_run.losses[s]), loss_rel_tol * std::abs(ref_run.losses[s]))
        << "step " << s + 1 << " TP=" << world;

  const Parameters<T>& p = model.params();
  const Parameters<T>& rp = ref.params();
  for (const ParamTensor& t : p.tensors) {
    const ParamTensor& rt = rp.find(t.name);
    double worst = 0;
    for (size_t i = 0; i < t.numel; ++i) {
      const T mine = p.values.data()[t.offset + i];
      const T theirs = rp.values.data()[rt.offset + t.logical_index(i)];
      worst = std::max(worst, double(std::abs(mine - theirs)));
    }
    EXPECT_LE(worst, param_tol) << t.name << " TP=" << world;
  }
  // Memory: each rank holds 1/TP of every split tensor.
  size_t split = 0, whole = 0;
  for (const ParamTensor& t : p.tensors) (t.replicated() ? whole : split) += t.numel;
  size_t ref_split = 0;
  for (const ParamTensor& t : rp.tensors)
    if (!p.find(t.name).replicated()) ref_split += t.numel;
  EXPECT_EQ(split * world, ref_split);
  EXPECT_EQ(p.size(), split + whole);
}

class TensorParallelFloat : public ::testing::TestWithParam<TpCase> {};
class TensorParallelDouble : public ::testing::TestWithParam<TpCase> {};

// In fp32 the bound: losses within 1e-5 relative, weights within
// 2e-5 after 20 AdamW steps of lr 3e-3 (a step moves a weight by up to 3e-3).
TEST_P(TensorParallelFloat, TrainsTheSameModelAsOneRank) { check_equivalence<float>(GetParam(), 1e-5, 2e-5); }

// In fp64 the same runs agree to rounding: any missing or doubled reduction
// shows as a difference of the size of a gradient.
TEST_P(TensorParallelDouble, TrainsTheSameModelAsOneRank) { check_equivalence<double>(GetParam(), 1e-11, 1e-11); }

const TpCase kMoeMqa{"moe_mqa", 1, 4, 2, 0.0}, kMoeGEqualsTp{"moe_g_equals_tp", -1, 4, 2, 0.0},
    kMoeCapacity{"moe_capacity", 2, 4, 2, 1.0}, kDenseMqa{"dense_mqa", 1, 1, 1, 0.0},
    kDenseGEqualsTp{"dense_g_equals_tp", -1, 1, 1, 0.0};
auto case_name = [](const auto& info) { return std::string(info.param.name); };

// Not the capacity case in fp32: rounding can flip a near-tied top-k choice,
// and under a capacity limit one flip reroutes later tokens (it diverged at
// step 6 at TP=2); in fp64 it matches like the others.
INSTANTIATE_TEST_SUITE_P(Layouts, TensorParallelFloat,
                         ::testing::Values(kMoeMqa, kMoeGEqualsTp, kDenseMqa, kDenseGEqualsTp), case_name);
INSTANTIATE_TEST_SUITE_P(Layouts, TensorParallelDouble,
                         ::testing::Values(kMoeMqa, kMoeGEqualsTp, kMoeCapacity, kDenseMqa, kDenseGEqualsTp),
                         case_name);

TEST(TensorParallelShape, SizesThatDoNotDivideAreNamed) {
  ModelConfig m = tiny({"", 1, 4, 2, 0.0});
  auto expect = [&](ModelConfig cfg, int tp, const std::string& what) {
    test_util::expect_error([&] { tp_shape(cfg, 0, tp); }, {what});
  };
  ModelConfig heads = m;
  heads.num_heads = 6;
  heads.hidden_size = 36;
  expect(heads, 4, "--num-attention-heads 6 is not divisible by --tensor-model-parallel-size 4");
  ModelConfig ffn = m;
  ffn.ffn_hidden_size = 36;
  expect(ffn, 8, "--ffn-hidden-size 36");
  ModelConfig vocab = m;
  vocab.vocab_size = 100;
  expect(vocab, 8, "vocabulary size 100");
  ModelConfig groups = m;  // G >= TP must divide by it: 6 kv heads over 4 ranks do not split
  groups.num_heads = 12;
  groups.hidden_size = 48;
  groups.num_query_groups = 6;
  expect(groups, 4, "--num-query-groups 6 is not divisible by --tensor-model-parallel-size 4");
  // G < TP: every rank holds all kv heads.
  ModelConfig few = m;
  few.num_query_groups = 4;
  const TpShape s = tp_shape(few, 3, 8);
  EXPECT_TRUE(s.kv_replicated);
  EXPECT_EQ(s.kv_heads, 4);
  EXPECT_EQ(s.heads, 1);
  EXPECT_EQ(s.first_head, 3);
}

}  // namespace
}  // namespace mt
