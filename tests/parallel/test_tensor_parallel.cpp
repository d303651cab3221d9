// The core test of tensor parallelism (docs/design.md section 4): a model split
// over the TP group trains the same model as one rank. Run under mpirun with
// 2, 4 and 8 ranks (tests/CMakeLists.txt); every rank also trains the
// single-rank model itself and compares, step by step and element by element.
#include <gtest/gtest.h>
#include <mpi.h>

#include <cmath>
#include <random>

#include "model/transformer.h"
#include "optim/adamw.h"
#include "run_trace.h"
#include "parallel/topology.h"
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
  ModelConfig m{.vocab_size = 64, .hidden_size = 32, .num_layers = 2, .num_heads = 8, .num_query_groups = c.G,
                .ffn_hidden_size = 32, .num_experts = c.E, .router_topk = c.K, .seq_length = 16,
                .capacity_factor = c.capacity, .aux_loss_coeff = 0.01};
  return m;
}

// `steps` optimizer steps of `micro` micro-batches each on a fixed stream of
// random tokens, the same on every rank. perturbation != 0: every weight
// moved by that much (relative) at the start and after every update.
template <typename T>
test_util::RunTrace train(Transformer<T>& model, AdamW<T>& optim, const ModelConfig& cfg, int steps, int micro,
                          int B, Communicator* world = nullptr, double perturbation = 0.0) {
  std::mt19937 rng(99);
  test_util::RunTrace run;
  auto& be = model.backend();
  std::vector<int32_t> tokens(size_t(B) * (cfg.seq_length + 1));
  const double ce_scale = 1.0 / (double(micro) * B * cfg.seq_length), aux_scale = 1.0 / micro;
  if (perturbation != 0.0) model.params().perturb(be, perturbation, 0);
  for (int s = 0; s < steps; ++s) {
    be.fill(model.params().grads.data(), T(0), model.params().size());
    double loss = 0;
    for (int j = 0; j < micro; ++j) {
      for (auto& t : tokens) t = int32_t(rng() % cfg.vocab_size);
      MicroBatchLoss l = model.forward_backward(tokens.data(), B, ce_scale, aux_scale);
      loss += l.ce_sum * ce_scale + l.aux * aux_scale;
    }
    model.reduce_partial_grads();
    const double norm = optim.step(model.params(), 3e-3);
    if (perturbation != 0.0) model.params().perturb(be, perturbation, s + 1);
    run.record(model, loss, norm, world);
  }
  return run;
}

constexpr int kSteps = 20, kMicro = 2, kBatch = 2;

AdamWConfig adam_config() {
  AdamWConfig adam;
  adam.weight_decay = 0.1;
  adam.clip_grad = 0.5;  // clipping active: the global norm must be right
  return adam;
}

ModelConfig case_config(const TpCase& c, int world) {
  ModelConfig cfg = tiny(c);
  if (c.G < 0) cfg.num_query_groups = world;  // G = TP
  return cfg;
}

// The case trained on one rank in precision T, its weights moved by
// `perturbation` (relative) at the start and after every update when not 0.
template <typename T>
test_util::RunTrace train_one_rank(const ModelConfig& cfg, double perturbation = 0.0) {
  auto be = make_cpu_backend<T>();
  Transformer<T> ref(*be, cfg, kBatch);
  AdamW<T> ref_optim(*be, adam_config(), ref.params());
  ref.params().initialise(*be, 5);
  return train(ref, ref_optim, cfg, kSteps, kMicro, kBatch, nullptr, perturbation);
}

// The case split over every rank of the world in precision T; also checks
// that each rank holds 1/TP of every split tensor.
template <typename T>
test_util::RunTrace train_split(const ModelConfig& cfg) {
  int world = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  auto be = make_cpu_backend<T>();
  Topology topo(MPI_COMM_WORLD, TopologyConfig{world, 1});
  const ProcessGroup& tp = topo.tp();
  Transformer<T> model(*be, cfg, kBatch, tp);
  AdamW<T> optim(*be, adam_config(), model.params(), tp);
  model.params().initialise(*be, 5);

  const Parameters<T>& p = model.params();
  const auto whole = param_table(cfg, 0, 1, StageSpan{});
  size_t split = 0, replicated = 0, whole_split = 0;
  for (const ParamTensor& t : p.tensors) (t.replicated() ? replicated : split) += t.numel;
  for (const ParamTensor& t : whole)
    if (!p.find(t.name).replicated()) whole_split += t.numel;
  EXPECT_EQ(split * world, whole_split);
  EXPECT_EQ(p.size(), split + replicated);
  return train(model, optim, cfg, kSteps, kMicro, kBatch, &topo.world());
}

class TensorParallelFloat : public ::testing::TestWithParam<TpCase> {};
class TensorParallelDouble : public ::testing::TestWithParam<TpCase> {};

// Within the derived bound of tests/rounding_bound.h in precision T: any
// missing or doubled reduction shows as a difference of the size of a
// gradient, orders of magnitude above it.
template <typename T>
void check_trains_like_one_rank(const TpCase& c) {
  int world = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  const ModelConfig cfg = case_config(c, world);
  test_util::expect_trains_like_one_rank<T>(
      train_split<T>(cfg), [&](double perturbation) { return train_one_rank<T>(cfg, perturbation); }, world);
}

TEST_P(TensorParallelDouble, TrainsTheSameModelAsOneRank) { check_trains_like_one_rank<double>(GetParam()); }
TEST_P(TensorParallelFloat, TrainsTheSameModelAsOneRank) { check_trains_like_one_rank<float>(GetParam()); }

const TpCase kMoeMqa{"moe_mqa", 1, 4, 2, 0.0}, kMoeGEqualsTp{"moe_g_equals_tp", -1, 4, 2, 0.0},
    kMoeCapacity{"moe_capacity", 2, 4, 2, 1.0}, kDenseMqa{"dense_mqa", 1, 1, 1, 0.0},
    kDenseGEqualsTp{"dense_g_equals_tp", -1, 1, 1, 0.0};
auto case_name = [](const auto& info) { return std::string(info.param.name); };

INSTANTIATE_TEST_SUITE_P(Layouts, TensorParallelFloat,
                         ::testing::Values(kMoeMqa, kMoeGEqualsTp, kMoeCapacity, kDenseMqa, kDenseGEqualsTp),
                         case_name);
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
