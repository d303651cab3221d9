// The planner on the MoE layers people train today (issue 33): SwiGLU,
// --kv-channels, --qk-layernorm, --moe-ffn-hidden-size, dense layers among
// MoE layers (--moe-layer-freq), the shared expert and its gate, the expert
// bias. Parameters and FLOPs against hand counts, per-rank counts against
// the whole model under TP x PP x EP, activations and work space against
// what the Transformer allocates, all-to-all and TP bytes layer kind by
// layer kind, with and without sequence parallelism
// (docs/planning.md).
#include <gtest/gtest.h>

#include <memory>

#include <mpi.h>

#include "model/parameters.h"
#include "model/transformer.h"
#include "planner/cost_model.h"
#include "planner/plan.h"
#include "plan_inputs.h"

namespace mt {
namespace {

// Every new piece at once: heads of 24 (H hd = 96 against d = 64), q/k
// norms, SwiGLU, dense layers 0 and 3 among MoE layers, experts of 32
// beside a gated shared expert of 48, sigmoid routing with the expert bias.
ModelConfig mixed_config() {
  ModelConfig c{.vocab_size = 384,
                .hidden_size = 64,
                .num_layers = 6,
                .num_heads = 4,
                .num_query_groups = 2,
                .kv_channels = 24,
                .qk_layernorm = true,
                .ffn_hidden_size = 96,
                .swiglu = true,
                .num_experts = 4,
                .router_topk = 2,
                .moe_ffn_hidden_size = 32,
                .moe_layers = {0, 1, 1, 0, 1, 1},
                .shared_expert_size = 48,
                .shared_expert_gate = true,
                .seq_length = 32,
                .router_score_function = "sigmoid",
                .expert_bias = true};
  c.validate();
  return c;
}

// Its sizes, by name.
constexpr int64_t d = 64, H = 4, hd = 24, G = 2, F = 96, Fe = 32, Fs = 48, E = 4, K = 2, L = 6, Lm = 4, Ld = 2,
                  V = 384, S = 32;

TEST(PlanMoeLayers, ParameterCountsClassifyEveryPiece) {
  const ModelConfig c = mixed_config();
  const ParameterCounts p = count_parameters(c);
  EXPECT_EQ(p.embedding, 2 * V * d);
  EXPECT_EQ(p.attention, L * (2 * d * H * hd + 2 * d * G * hd));  // wq, wo over H hd; wk, wv over G hd
  EXPECT_EQ(p.norms, L * (2 * d + 2 * hd) + d);                   // attn_norm, mlp_norm, q_norm, k_norm; final
  EXPECT_EQ(p.router, Lm * E * d);
  EXPECT_EQ(p.dense_mlp, Ld * 3 * d * F);              // w1, w3, w2 of the dense layers
  EXPECT_EQ(p.shared_experts, Lm * (3 * d * Fs + d));  // w1, w3, w2 and the gate
  EXPECT_EQ(p.per_expert, Lm * 3 * d * Fe);
  EXPECT_EQ(p.experts, E * p.per_expert);
  EXPECT_EQ(p.embedding + p.attention + p.norms + p.router + p.dense_mlp + p.shared_experts + p.experts, p.total);
  EXPECT_EQ(p.shared, p.total - p.experts);
  // Every token passes through the dense MLPs and the shared experts, and K
  // of the E routed experts.
  EXPECT_EQ(p.active, p.total - (E - K) * p.per_expert);
  EXPECT_EQ(p.total, c.num_parameters());
  EXPECT_EQ(p.active, c.num_active_parameters());
}

// Each rank holds its TP share of every split tensor (the shared expert and
// a dense MLP split like any MLP, over F) and E/EP of the routed experts; the
// whole-on-every-TP-rank tensors (norms, routers, the gate) are held TP
// times. Summed over the ranks of one DP replica with each EP rank's
// experts counted, the counts are the model's.
TEST(PlanMoeLayers, PerRankCountsSumToTheModelUnderTpPpEp) {
  const ModelConfig c = mixed_config();
  const int tp = 2, pp = 2;
  const int64_t replicated = L * (2 * d + 2 * hd) + Lm * (E * d + d) + d;  // norms; routers and gates; final norm
  for (int ep : {1, 2}) {
    SCOPED_TRACE(ep);
    PlanInputs in = test_util::plan_inputs(c, tp, pp, 4, 1, 8, ep);
    in.layout.first_stage_layers = 2;  // layers 0-1 (dense, MoE) and 2-5 (MoE, dense, MoE, MoE)
    const PlanResult r = make_plan(in);
    const std::vector<RankCounts> counts = rank_counts(c, tp, stage_spans(c, in.layout), ep);
    ASSERT_EQ(r.ranks.size(), 4u);
    ASSERT_EQ(counts.size(), 4u);
    int64_t held = 0;
    double active = 0;
    for (size_t i = 0; i < r.ranks.size(); ++i) {
      const RankMemory& m = r.ranks[i];
      const int moe_layers = m.pp == 0 ? 1 : 3;
      EXPECT_EQ(m.expert_parameters, moe_layers * (E / ep) * 3 * d * Fe / tp) << "rank " << i;
      EXPECT_EQ(m.parameters, counts[i].parameters);
      held += m.parameters - m.expert_parameters + ep * m.expert_parameters;
      active += counts[i].active_weights;
    }
    EXPECT_EQ(held - (tp - 1) * replicated, c.num_parameters());
    // Active weights (no embedding, a lookup): the routed experts at K EP / E
    // of the E / EP a rank holds, the dense MLPs and shared experts whole.
    EXPECT_DOUBLE_EQ(active - double((tp - 1) * replicated), double(c.num_active_parameters() - V * d));
  }
}

// Only MoE layers dispatch over EP; every layer all-reduces its attention
// and FFN outputs over TP (an MoE layer's routed experts and shared expert
// at once), MoE layers also the routing weights' gradient and the gate's
// dot(dout, s).
TEST(PlanMoeLayers, DenseLayersAddNoAllToAllAndNoRoutingReduction) {
  ModelConfig c = mixed_config();
  c.moe_layers = {0, 0, 0, 1, 0, 1};  // stage 0 dense; stage 1 MoE, dense, MoE
  const PlanResult r = make_plan(test_util::plan_inputs(c, 2, 2, 2, 1, 2, 2));  // fp32
  ASSERT_EQ(r.stages.size(), 2u);
  const double T = S, act = T * d * 4.0;
  EXPECT_EQ(r.stages[0].ep_sent_bytes, 0.0);
  const double rows = 0.5 * T * K * d * 4.0;     // half of the T K rows go to the other EP rank
  const double row_counts = 1 * (E / 2) * 4.0;  // the other rank's experts' counts, int32
  EXPECT_DOUBLE_EQ(r.stages[1].ep_sent_bytes, 2 * (4 * rows + row_counts));
  EXPECT_DOUBLE_EQ(r.stages[0].tp_bytes, 3 * 4 * act + act);  // + the embedding's output
  EXPECT_DOUBLE_EQ(r.stages[1].tp_bytes,
                   3 * 4 * act + 2 * (T * K * 4.0 + T * 4.0) + act + 3 * T * 4.0);  // + the LM head's
  // Full recompute runs each forward twice.
  PlanInputs full = test_util::plan_inputs(c, 2, 2, 2, 1, 2, 2);
  full.layout.recompute = Recompute::Full;
  const PlanResult f = make_plan(full);
  EXPECT_DOUBLE_EQ(f.stages[1].ep_sent_bytes, 2 * (6 * rows + 2 * row_counts));
  EXPECT_DOUBLE_EQ(f.stages[1].tp_bytes, 3 * 6 * act + 2 * (T * K * 4.0 + T * 4.0) + act + 3 * T * 4.0);
  // Sequence parallelism: each all-reduce of T d becomes a reduce-scatter
  // and an all-gather, the backward gathers m, a, dout and dh again; the
  // routing's and the cross-entropy's all-reduces stay.
  PlanInputs sp = test_util::plan_inputs(c, 2, 2, 2, 1, 2, 2);
  sp.layout.sequence_parallel = true;
  const PlanResult q = make_plan(sp);
  EXPECT_DOUBLE_EQ(q.stages[0].tp_bytes, 0.0);
  EXPECT_DOUBLE_EQ(q.stages[0].tp_sp_bytes, 3 * 10 * act + 2 * act);  // + the embedding's, and its gradient
  EXPECT_DOUBLE_EQ(q.stages[1].tp_bytes, 2 * (T * K * 4.0 + T * 4.0) + 3 * T * 4.0);
  EXPECT_DOUBLE_EQ(q.stages[1].tp_sp_bytes, 3 * 10 * act + 3 * act);  // + hf twice, dhf
  // A ring reduce-scatter or all-gather sends half of what an all-reduce of the buffer does.
  EXPECT_DOUBLE_EQ(q.stages[0].tp_sent_bytes, q.stages[0].tp_sp_bytes / 2);
  EXPECT_DOUBLE_EQ(q.stages[1].pp_sent_bytes, act / 2);  // the stage boundary: this rank's rows
  // Every norm gain's gradient is partial over TP once a step.
  const int64_t norms = 3 * 2 * d + 3 * 2 * hd + d;  // stage 1: attn_norm, mlp_norm, q_norm, k_norm; final
  EXPECT_DOUBLE_EQ(q.stages[1].tp_once_bytes - r.stages[1].tp_once_bytes, 4.0 * double(3 * 2 * d + d));
  EXPECT_DOUBLE_EQ(q.stages[1].tp_once_bytes, 4.0 * double(norms) + 8.0);
}

// SwiGLU's third product: an MLP's FLOPs go from 2 x 2 d F to 3 x 2 d F a
// token, for the dense MLPs, each of the K routed experts and the shared
// expert alike. The attention scores take 4 S H hd a layer, H hd being 96
// here, not d = 64.
TEST(PlanMoeLayers, SwigluAddsFlopsInTheThreeToTwoRatio) {
  const ModelConfig swiglu = mixed_config();
  ModelConfig gelu = swiglu;
  gelu.swiglu = false;
  const FlopCounts fs = make_plan(test_util::plan_inputs(swiglu, 1, 1, 1, 1, 1, 1)).flops;
  const FlopCounts fg = make_plan(test_util::plan_inputs(gelu, 1, 1, 1, 1, 1, 1)).flops;
  const double mlp_gelu = 2.0 * 2.0 * double(Ld * d * F + Lm * (K * d * Fe + d * Fs));
  EXPECT_DOUBLE_EQ(fs.forward - fg.forward, mlp_gelu / 2);  // (3 - 2) : 2
  EXPECT_DOUBLE_EQ(fs.train, 3.0 * fs.forward);
  // The rest, by hand: attention, norms, routers and gates at 2 FLOPs a
  // weight (the model counts every active weight), the LM head, the scores.
  const double weights = L * (2 * d * H * hd + 2 * d * G * hd + 2 * d + 2 * hd) + Lm * (E * d + d) + d + V * d;
  const double scores = 4.0 * S * H * hd * L;
  EXPECT_DOUBLE_EQ(fg.forward, 2.0 * weights + mlp_gelu + scores);
  // Selective recompute runs the scores again.
  PlanInputs selective = test_util::plan_inputs(swiglu, 1, 1, 1, 1, 1, 1);
  selective.layout.recompute = Recompute::Selective;
  const FlopCounts fsel = make_plan(selective).flops;
  EXPECT_DOUBLE_EQ(fsel.train_with_recompute - fsel.train, scores);

  // A stage's products: a dense layer's MLP whole, an MoE layer's K experts
  // and its shared expert, at TP 2 half each on the busiest rank.
  ModelConfig staged = swiglu;
  staged.moe_layers = {0, 0, 0, 1, 1, 1};
  ModelConfig staged_gelu = staged;
  staged_gelu.swiglu = false;
  const PlanResult a = make_plan(test_util::plan_inputs(staged, 2, 2, 1, 1, 1, 1));
  const PlanResult b = make_plan(test_util::plan_inputs(staged_gelu, 2, 2, 1, 1, 1, 1));
  EXPECT_DOUBLE_EQ(a.stages[0].forward_flops - b.stages[0].forward_flops, double(S) * 2.0 * 3 * d * F / 2);
  EXPECT_DOUBLE_EQ(a.stages[1].forward_flops - b.stages[1].forward_flops,
                   double(S) * 2.0 * 3 * (K * d * Fe + d * Fs) / 2);
}

// The planner's per-micro-batch activations and work space are the bytes
// a Transformer allocates for its slot and beside it (activation_bytes,
// workspace_bytes: every DeviceBuffer counted), built here without
// communicating: SwiGLU's u, u3 and gated product, the shared expert's
// hidden rows, output and gate, qk-norm's q and k before the norm, each
// layer its own MLP's; full recompute's rebuilt layer with both kinds;
// each stage's first and last pieces; EP's returned rows and dispatch
// buffers; sequence parallelism's split rows and gathered buffers. Both
// stages of TP2 x PP2, both TP ranks, fp32 and bf16.
template <typename T>
void expect_what_the_transformer_allocates(ModelConfig c, Precision precision) {
  const std::unique_ptr<Backend<T>> be = make_cpu_backend<T>();
  MpiCommunicator self(MPI_COMM_SELF);  // the constructor only allocates: no collective is called
  const int tp = 2, pp = 2, micro = 2;
  for (int ep : {1, 2})
    for (Recompute recompute : {Recompute::None, Recompute::Selective, Recompute::Full})
      for (bool sp : {false, true}) {
        SCOPED_TRACE(::testing::Message() << "ep " << ep << " recompute " << to_string(recompute) << " sp " << sp);
        PlanInputs in = test_util::plan_inputs(c, tp, pp, 2, micro, 2 * micro, ep);
        in.precision = precision;
        in.layout.first_stage_layers = 2;
        in.layout.recompute = recompute;
        in.layout.recompute_method = RecomputeMethod::Block;  // a group of 2 rebuilt, the rest kept
        in.layout.recompute_num_layers = 2;
        in.layout.sequence_parallel = sp;
        const PlanResult r = make_plan(in);
        const std::vector<StageSpan> spans = stage_spans(c, in.layout);
        for (const RankMemory& m : r.ranks) {
          SCOPED_TRACE(::testing::Message() << "tp rank " << m.tp << " stage " << m.pp);
          const Transformer<T> model(*be, c, micro, ProcessGroup{&self, m.tp, tp}, spans[size_t(m.pp)], 2,
                                     {recompute, RecomputeMethod::Block, 2}, ProcessGroup{&self, 0, ep},
                                     TransformerOptions{.sequence_parallel = sp});
          EXPECT_EQ(m.activations_per_micro_batch, double(model.activation_bytes()));
          EXPECT_EQ(m.workspace, double(model.workspace_bytes()));
          EXPECT_EQ(m.activations, m.live_micro_batches * m.activations_per_micro_batch);
        }
      }
}

TEST(PlanMoeLayers, ActivationsAndWorkspaceAreWhatTheTransformerAllocates) {
  expect_what_the_transformer_allocates<float>(mixed_config(), Precision::FP32);
  expect_what_the_transformer_allocates<bf16>(mixed_config(), Precision::BF16);
  // Document masks keep each token's document start; a capacity factor
  // bounds the expert rows.
  ModelConfig c = mixed_config();
  c.reset_attention_mask = true;
  c.capacity_factor = 1.0;
  expect_what_the_transformer_allocates<float>(c, Precision::FP32);
}

// The backward pass's work space grows by SwiGLU's third [rows, F] gradient
// in each MLP the stage runs; the expert bias and routing counts are kept
// per MoE layer beside the parameters, which they are not part of.
TEST(PlanMoeLayers, WorkspaceAndRouterStateFollowTheLayers) {
  const ModelConfig swiglu = mixed_config();
  ModelConfig gelu = swiglu;
  gelu.swiglu = false;
  const int tp = 2, micro = 2;
  const double T = double(micro) * S, R = T * K;  // no EP: the expert rows are the T K copies
  const RankMemory a = make_plan(test_util::plan_inputs(swiglu, tp, 1, 1, micro, micro, 1)).ranks[0];
  const RankMemory b = make_plan(test_util::plan_inputs(gelu, tp, 1, 1, micro, micro, 1)).ranks[0];
  EXPECT_DOUBLE_EQ(a.workspace - b.workspace, 4.0 * (T * F / tp + R * Fe / tp + T * Fs / tp));
  EXPECT_DOUBLE_EQ(a.router_state, Lm * (16.0 * E + 4.0 * E));  // kept and chosen int64 counts, float32 bias
  EXPECT_DOUBLE_EQ(a.total(), a.weights + a.gradients + a.optimizer + a.activations + a.workspace + a.router_state);
  ModelConfig no_bias = swiglu;
  no_bias.expert_bias = false;
  const RankMemory n = make_plan(test_util::plan_inputs(no_bias, tp, 1, 1, micro, micro, 1)).ranks[0];
  EXPECT_DOUBLE_EQ(a.router_state - n.router_state, Lm * 4.0 * E);
  EXPECT_EQ(a.parameters, n.parameters);  // the bias is no parameter: no gradient, no Adam moments
  // A stage of dense layers keeps no routing state.
  ModelConfig staged = swiglu;
  staged.moe_layers = {0, 0, 0, 1, 1, 1};
  const PlanResult p = make_plan(test_util::plan_inputs(staged, 1, 2, 1, 1, 1, 1));
  EXPECT_EQ(p.ranks[0].router_state, 0.0);
  EXPECT_DOUBLE_EQ(p.ranks[1].router_state, 3 * 20.0 * E);
}

}  // namespace
}  // namespace mt
