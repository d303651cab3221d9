// The core test of tensor parallelism (docs/design.md section 4): a model split
// over the TP group, with and without sequence parallelism, trains the same
// model as one rank. Run under mpirun with
// 2, 4 and 8 ranks (tests/CMakeLists.txt); every rank also trains the
// single-rank model itself and compares, step by step and element by element.
#include <gtest/gtest.h>
#include <mpi.h>

#include <cmath>
#include <random>

#include "model/transformer.h"
#include "optim/adamw.h"
#include "moe_designs.h"
#include "run_trace.h"
#include "parallel/topology.h"
#include "test_util.h"

namespace mt {
namespace {

struct TpCase {
  const char* name;
  int G, E, K;
  double capacity;
  void (*design)(ModelConfig&) = nullptr;  // the MoE design's options (issue 33's pieces)
  bool sequence_parallel = false;
  RecomputeGranularity recompute = RecomputeGranularity::None;  // the same on one rank and split
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
    model.start_step();
    be.fill(model.params().grads.data(), T(0), model.params().size());
    double loss = 0;
    for (int j = 0; j < micro; ++j) {
      for (auto& t : tokens) t = int32_t(rng() % cfg.vocab_size);
      MicroBatchLoss l = model.forward_backward(tokens.data(), B, ce_scale, aux_scale);
      loss += l.ce_sum * ce_scale + l.aux * aux_scale;
    }
    model.reduce_partial_grads();
    const double norm = optim.step(model.params(), 3e-3);
    model.update_router_state(ProcessGroup{});  // no DP: this rank's tokens are the global batch
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
  if (c.design) c.design(cfg);
  cfg.validate();
  return cfg;
}

// The case trained on one rank in precision T, its weights moved by
// `perturbation` (relative) at the start and after every update when not 0.
template <typename T>
test_util::RunTrace train_one_rank(const ModelConfig& cfg, const TpCase& c, double perturbation = 0.0) {
  auto be = make_cpu_backend<T>();
  Transformer<T> ref(*be, cfg, kBatch, {}, {}, 1, {c.recompute});
  AdamW<T> ref_optim(*be, adam_config(), ref.params());
  ref.params().initialise(*be, 5);
  return train(ref, ref_optim, cfg, kSteps, kMicro, kBatch, nullptr, perturbation);
}

// The case split over every rank of the world in precision T; also checks
// that each rank holds 1/TP of every split tensor.
template <typename T>
test_util::RunTrace train_split(const ModelConfig& cfg, const TpCase& c) {
  int world = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  auto be = make_cpu_backend<T>();
  Topology topo(MPI_COMM_WORLD, TopologyConfig{world, 1});
  const ProcessGroup& tp = topo.tp();
  Transformer<T> model(*be, cfg, kBatch, tp, {}, 1, {c.recompute}, {}, {.sequence_parallel = c.sequence_parallel});
  EXPECT_EQ(model.boundary_elements(kBatch),
            size_t(kBatch) * cfg.seq_length * cfg.hidden_size / (c.sequence_parallel ? world : 1));
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
  const test_util::RunTrace split = train_split<T>(cfg, c);
  test_util::expect_trains_like_one_rank<T>(
      split, [&](double perturbation) { return train_one_rank<T>(cfg, c, perturbation); }, world);
  if (cfg.expert_bias) {
    EXPECT_TRUE(split.expert_bias_moved());
  }
}

TEST_P(TensorParallelDouble, TrainsTheSameModelAsOneRank) { check_trains_like_one_rank<double>(GetParam()); }
TEST_P(TensorParallelFloat, TrainsTheSameModelAsOneRank) { check_trains_like_one_rank<float>(GetParam()); }

// The MoE designs of the last two years (docs/design.md section 3), their
// widths divisible by 8 ranks: Mixtral's and Qwen's SwiGLU experts of their
// own width behind a dense first layer, with Qwen2-MoE's gated shared
// expert; DeepSeek-V3's sigmoid routing balanced by the expert bias alone,
// over expert groups, and Qwen3's normalised queries and keys of their own
// head size; scores over all experts with the global-batch loss and
// dropping; a dense model of gated MLPs.
void swiglu_shared_first_dense(ModelConfig& m) {
  m.swiglu = true;
  m.moe_ffn_hidden_size = 16;
  m.moe_layers = {0, 1};
  m.shared_expert_size = 16;
  m.shared_expert_gate = true;
}
void sigmoid_bias_groups(ModelConfig& m) {
  test_util::deepseek_routing(m);
  m.load_balancing_type = "none";  // the bias alone (the layouts' DeepSeek design adds the per-sequence loss)
  m.qk_layernorm = true;
  m.kv_channels = 8;
}
void pre_softmax_global_aux(ModelConfig& m) {
  m.router_pre_softmax = true;
  m.load_balancing_type = "global_aux_loss";
  m.z_loss_coeff = 1e-3;
}
void swiglu_qk_norm(ModelConfig& m) {
  m.swiglu = true;
  m.qk_layernorm = true;
  m.kv_channels = 8;
}
// Documents: token 3 of the 64 random ids ends one, about every 64 tokens.
void documents(ModelConfig& m) {
  m.reset_position_ids = m.reset_attention_mask = true;
  m.eod_token = 3;
}
void swiglu_shared_documents(ModelConfig& m) {
  swiglu_shared_first_dense(m);
  documents(m);
}

const TpCase kMoeMqa{"moe_mqa", 1, 4, 2, 0.0}, kMoeGEqualsTp{"moe_g_equals_tp", -1, 4, 2, 0.0},
    kMoeCapacity{"moe_capacity", 2, 4, 2, 1.0}, kDenseMqa{"dense_mqa", 1, 1, 1, 0.0},
    kDenseGEqualsTp{"dense_g_equals_tp", -1, 1, 1, 0.0},
    kMoeSwigluShared{"moe_swiglu_shared_first_dense", 1, 4, 2, 0.0, swiglu_shared_first_dense},
    kMoeSigmoidBias{"moe_sigmoid_bias_groups", 2, 4, 2, 0.0, sigmoid_bias_groups},
    kMoePreSoftmax{"moe_pre_softmax_global_aux", 1, 4, 2, 1.0, pre_softmax_global_aux},
    kDenseSwigluQkNorm{"dense_swiglu_qk_norm", 1, 1, 1, 0.0, swiglu_qk_norm};
// Sequence parallelism: the residual stream, norms and router inputs split
// over TP by rows; with documents and activation recompute.
const TpCase kSpMoeCapacity{"sp_moe_capacity", 2, 4, 2, 1.0, nullptr, true},
    kSpMoeSwigluSharedDocuments{"sp_moe_swiglu_shared_documents", 1, 4, 2, 0.0, swiglu_shared_documents, true,
                                RecomputeGranularity::Full},
    kSpMoeSigmoidBias{"sp_moe_sigmoid_bias_groups", 2, 4, 2, 0.0, sigmoid_bias_groups, true,
                      RecomputeGranularity::Selective},
    kSpDenseGEqualsTp{"sp_dense_g_equals_tp", -1, 1, 1, 0.0, documents, true};
auto case_name = [](const auto& info) { return std::string(info.param.name); };

INSTANTIATE_TEST_SUITE_P(Layouts, TensorParallelFloat,
                         ::testing::Values(kMoeMqa, kMoeGEqualsTp, kMoeCapacity, kDenseMqa, kDenseGEqualsTp,
                                           kMoeSwigluShared, kMoeSigmoidBias, kMoePreSoftmax, kDenseSwigluQkNorm,
                                           kSpMoeCapacity, kSpMoeSwigluSharedDocuments, kSpMoeSigmoidBias,
                                           kSpDenseGEqualsTp),
                         case_name);
INSTANTIATE_TEST_SUITE_P(Layouts, TensorParallelDouble,
                         ::testing::Values(kMoeMqa, kMoeGEqualsTp, kMoeCapacity, kDenseMqa, kDenseGEqualsTp,
                                           kMoeSwigluShared, kMoeSigmoidBias, kMoePreSoftmax, kDenseSwigluQkNorm,
                                           kSpMoeCapacity, kSpMoeSwigluSharedDocuments, kSpMoeSigmoidBias,
                                           kSpDenseGEqualsTp),
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
