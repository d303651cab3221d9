// The cost model's formulas (per-rank parameters and ZeRO-1 shards,
// activations, bubble, serving, time) and the layout search against hand
// computations (docs/planning.md).
#include <gtest/gtest.h>

#include <cmath>

#include "model/parameters.h"
#include "planner/plan.h"
#include "plan_inputs.h"
#include "tiny_model.h"

namespace mt {
namespace {

// The tiny model's exact per-rank counts, and ZeRO-1's padding to DP.
ModelConfig tiny_config() {
  ModelConfig c = test_util::tiny_model_config();
  c.num_layers = 5;
  return c;
}

TEST(Plan, EveryRankHoldsItsParamTableAndZeroOneShards) {
  const ModelConfig c = tiny_config();
  PlanInputs in = test_util::plan_inputs(c, 2, 2, 3, 1, 12);
  in.layout.first_stage_layers = 2;  // stages of 2 and 3 layers
  const PlanResult r = make_plan(in);
  ASSERT_EQ(r.ranks.size(), 4u);
  bool padded = false;
  for (const RankMemory& m : r.ranks) {
    const StageSpan span{m.pp == 0 ? 0 : 2, m.pp == 0 ? 2 : 5, m.pp == 0, m.pp == 1};
    int64_t n = 0;
    for (const ParamTensor& t : param_table(c, m.tp, 2, span)) n += int64_t(t.numel);
    EXPECT_EQ(m.parameters, n);
    EXPECT_EQ(m.layer_end - m.layer_begin, m.pp == 0 ? 2 : 3);
    const int64_t n_pad = (n + 2) / 3 * 3;
    padded |= n_pad != n;
    EXPECT_EQ(m.padded_parameters, n_pad);
    EXPECT_DOUBLE_EQ(m.weights, 4.0 * n_pad);                    // fp32: the weights are the master copy
    EXPECT_DOUBLE_EQ(m.gradients, 4.0 * n_pad + 4.0 * n_pad / 3);  // accumulation buffer + reduce-scattered shard
    EXPECT_DOUBLE_EQ(m.optimizer, 8.0 * n_pad / 3);              // exp_avg + exp_avg_sq of the shard
  }
  EXPECT_TRUE(padded) << "no rank's count needed padding to DP 3; the test would not check it";

  // bf16 (Megatron mixed precision): 2-byte weights, fp32 gradients, 12 bytes of optimizer over DP.
  in.precision = Precision::BF16;
  const PlanResult b = make_plan(in);
  const double n_pad = double(b.ranks[0].padded_parameters);
  EXPECT_DOUBLE_EQ(b.ranks[0].weights, 2.0 * n_pad);
  EXPECT_DOUBLE_EQ(b.ranks[0].optimizer, 12.0 * n_pad / 3);
}

// EP 2: each rank holds half of every layer's experts; the shared tensors
// are padded to and sharded over DP, the experts over DP / EP; the
// all-to-alls send the (EP-1)/EP of each micro-batch's T K rows that go to
// the other rank's experts, four times a MoE layer, plus the row counts.
TEST(Plan, ExpertParallelSplitsTheExpertsAndCountsTheAllToAll) {
  const ModelConfig c = tiny_config();
  PlanInputs in = test_util::plan_inputs(c, 1, 1, 6, 2, 12);
  in.layout.ep = 2;
  const PlanResult r = make_plan(in);
  ASSERT_EQ(r.ranks.size(), 1u);
  const RankMemory& m = r.ranks[0];
  int64_t shared = 0, experts = 0;
  for (const ParamTensor& t : param_table(c, 0, 1, {}, 1, 2)) (t.is_expert ? experts : shared) += int64_t(t.numel);
  const ParameterCounts p = count_parameters(c);
  EXPECT_EQ(experts, p.experts / 2);
  EXPECT_EQ(m.parameters, shared + experts);
  EXPECT_EQ(m.expert_parameters, experts);
  const int64_t shared_pad = (shared + 5) / 6 * 6, experts_pad = (experts + 2) / 3 * 3;
  EXPECT_EQ(m.padded_parameters, shared_pad + experts_pad);
  EXPECT_EQ(m.shard_parameters, shared_pad / 6 + experts_pad / 3);
  EXPECT_DOUBLE_EQ(m.optimizer, 8.0 * double(shared_pad / 6 + experts_pad / 3));
  EXPECT_DOUBLE_EQ(m.dp_sent_bytes, 8.0 * (double(shared_pad) * 5 / 6 + double(experts_pad) * 2 / 3));
  const double T = 2.0 * c.seq_length;
  const double rows = 0.5 * T * c.router_topk * c.hidden_size * 4.0, counts = 1 * 2 * 4.0;
  EXPECT_DOUBLE_EQ(r.stages[0].ep_sent_bytes, c.num_layers * (4.0 * rows + counts));
  EXPECT_DOUBLE_EQ(r.comm.ep_sent_bytes, double(r.micro_batches) * r.stages[0].ep_sent_bytes);
  // Without a capacity factor a rank's experts may receive every row of both ranks.
  EXPECT_EQ(m.expert_rows, int64_t(2 * T * c.router_topk));
  in.model.capacity_factor = 1.0;
  EXPECT_EQ(make_plan(in).ranks[0].expert_rows, int64_t(c.num_experts) * int64_t(T * c.router_topk / c.num_experts));
}

TEST(Plan, ParameterCountsSplitTheModel) {
  const ModelConfig c = tiny_config();
  const ParameterCounts p = count_parameters(c);
  const int64_t d = 64, hd = 16, V = 384, L = 5, F = 128, E = 4;
  EXPECT_EQ(p.embedding, 2 * V * d);
  EXPECT_EQ(p.attention, L * (2 * d * d + 2 * hd * d));  // wq, wo whole; wk, wv one kv head
  EXPECT_EQ(p.router, L * E * d);
  EXPECT_EQ(p.norms, L * 2 * d + d);
  EXPECT_EQ(p.per_expert, L * 2 * d * F);
  EXPECT_EQ(p.total, p.shared + E * p.per_expert);
  EXPECT_EQ(p.active, p.shared + 2 * p.per_expert);
  EXPECT_EQ(p.total, c.num_parameters());
}

// Korthikanti et al. (2022): sbh (34 + 5 a s / h) bytes a layer without
// parallelism, sbh (10 + 24/t + 5 a s / (h t)) with t-way TP, and
// sbh (34/t + 5 a s / (h t)) with t-way TP and sequence parallelism (table
// 2), 16-bit activations, F = 4h, full multi-head attention. This model has
// no dropout, which takes 2 sbh (two dropout masks; 2 sbh / t under
// sequence parallelism) + 3 a s^2 b / t (the attention dropout's mask and
// output) off, and tiled attention, which keeps each row's log-sum-exp
// (4 a s b / t bytes) instead of the 2 a s^2 b / t bytes of scores; the two
// norms' statistics add 8 sb bytes (8 sb / t). A micro-batch's slot also
// holds its inputs and targets (int32, 8 sb) and the stage's output
// (2 sbh, 2 sbh / t).
TEST(Plan, ActivationsFollowKorthikantiWithoutDropout) {
  ModelConfig c{.vocab_size = 512, .hidden_size = 256, .num_layers = 8, .num_heads = 8, .num_query_groups = 8,
                .ffn_hidden_size = 1024, .num_experts = 1, .router_topk = 1, .seq_length = 128};
  for (int tp : {1, 2, 4})
    for (bool sp : {false, true}) {
      if (sp && tp == 1) continue;
      SCOPED_TRACE(::testing::Message() << "tp " << tp << " sp " << sp);
      PlanInputs in = test_util::plan_inputs(c, tp, 4, 1, 2, 16);  // 8 micro-batches of 2 samples
      in.precision = Precision::BF16;
      in.layout.sequence_parallel = sp;
      const PlanResult r = make_plan(in);
      const double s = 128, b = 2, h = 256, a = 8, t = tp, split = sp ? t : 1;
      const double korthikanti = sp ? s * b * h * (34 / t + 5 * a * s / (h * t))
                                    : s * b * h * (10 + 24 / t + 5 * a * s / (h * t));
      const double per_layer =
          korthikanti - 2 * s * b * h / split - 5 * a * s * s * b / t + 4 * a * s * b / t + 8 * s * b / split;
      const double slot = 8 * s * b + 2 * s * b * h / split;  // inputs, targets; the stage's output
      // Selective recompute rebuilds the attention output (2 sbh / t) and its log-sum-exp.
      const double core = 2 * s * b * h / t + 4 * a * s * b / t;
      for (const RankMemory& m : r.ranks) {
        if (m.pp == 3) continue;  // the last stage also keeps the logits
        const int live = std::min(4 - m.pp, 8);
        EXPECT_EQ(m.live_micro_batches, live) << "stage " << m.pp;
        const double tolerance = 1e-9 * m.none.per_micro_batch;
        EXPECT_NEAR(m.none.per_micro_batch, 2 * per_layer + slot, tolerance);
        EXPECT_DOUBLE_EQ(m.none.activations, live * m.none.per_micro_batch);
        // Selective: the core rebuilt into the work space, one layer at a time.
        EXPECT_NEAR(m.selective.per_micro_batch, 2 * (per_layer - core) + slot, tolerance);
        EXPECT_NEAR(m.selective.workspace - m.none.workspace, core, tolerance);
        // Full recompute: each layer's input (2 sbh, / t under sequence
        // parallelism), and one layer rebuilt with its output.
        EXPECT_NEAR(m.full.per_micro_batch, 2 * (2 * s * b * h / split) + slot, tolerance);
        EXPECT_NEAR(m.full.workspace - m.none.workspace, per_layer + 2 * s * b * h / split, tolerance);
      }
    }
}

// Sequence parallelism never holds more on a rank: the residual stream's
// rows it splits outweigh the [T, d] rows it gathers and the input
// gradient's own rows, under every recompute, down to a stage of one layer.
TEST(Plan, SequenceParallelismHoldsNoMore) {
  ModelConfig c = tiny_config();
  c.num_layers = 4;
  for (int tp : {2, 4})
    for (Recompute recompute : {Recompute::None, Recompute::Selective, Recompute::Full}) {
      SCOPED_TRACE(::testing::Message() << "tp " << tp << " recompute " << to_string(recompute));
      PlanInputs in = test_util::plan_inputs(c, tp, 4, 1, 1, 4);
      in.layout.recompute = recompute;
      const PlanResult off = make_plan(in);
      in.layout.sequence_parallel = true;
      const PlanResult on = make_plan(in);
      for (size_t i = 0; i < on.ranks.size(); ++i) {
        EXPECT_LE(on.ranks[i].total(), off.ranks[i].total()) << "rank " << i;
        EXPECT_EQ(on.ranks[i].weights + on.ranks[i].gradients, off.ranks[i].weights + off.ranks[i].gradients);
      }
    }
  // At TP 1 it is a no-op.
  PlanInputs one = test_util::plan_inputs(c, 1, 1, 1, 1, 1);
  const double without = make_plan(one).ranks[0].total();
  one.layout.sequence_parallel = true;
  EXPECT_EQ(make_plan(one).ranks[0].total(), without);
}

TEST(Plan, BubbleIsTheOneFOneBFormulaForEqualStages) {
  for (int pp : {2, 4, 8})
    for (int m : {1, 4, 16}) {
      const std::vector<double> equal(pp, 1.0);
      EXPECT_NEAR(pipeline_bubble(equal, m), double(pp - 1) / (m + pp - 1), 1e-12) << pp << " " << m;
    }
  // One slow stage holds the others up: more idle time than the formula.
  EXPECT_GT(pipeline_bubble({1.0, 1.0, 1.5}, 8), 2.0 / 10.0);
  // The bench model of docs/benchmarks.md at PP 4, m 8: the last stage's LM
  // head makes it a little heavier than the others.
  ModelConfig c = tiny_config();
  c.num_layers = 8;
  c.hidden_size = 256;
  c.num_heads = 8;
  c.ffn_hidden_size = 512;
  c.num_experts = 8;
  c.seq_length = 256;
  const PlanResult r = make_plan(test_util::plan_inputs(c, 1, 4, 1, 1, 8));
  EXPECT_GT(r.bubble_fraction, 3.0 / 11.0);
  EXPECT_LT(r.bubble_fraction, 3.0 / 11.0 + 0.03);
}

TEST(Plan, ServingBoundIsBandwidthOverBytesReadPerToken) {
  const ModelConfig c = tiny_config();
  PlanInputs in = test_util::plan_inputs(c, 1, 1, 1, 1, 1);
  in.gpu = find_gpu("h100-80gb");
  in.precision = Precision::BF16;
  const PlanResult r = make_plan(in);
  const double kv = 2.0 * c.num_layers * 1 * 16 * c.seq_length * 2;  // K and V, 1 kv head of 16, fp16
  EXPECT_DOUBLE_EQ(r.serving.kv_per_sequence, kv);
  EXPECT_DOUBLE_EQ(r.serving.kv_per_sequence_mha, kv * 4);
  // A token reads every active weight but the embedding (one row), and its KV cache.
  const double active = double(c.num_active_parameters() - int64_t(c.vocab_size) * c.hidden_size);
  EXPECT_NEAR(r.serving.tokens_per_s_fp16, 3350e9 / (2 * active + kv), 1e-9 * r.serving.tokens_per_s_fp16);
  EXPECT_NEAR(r.serving.tokens_per_s_fp8, 3350e9 / (active + kv), 1e-9 * r.serving.tokens_per_s_fp8);
  EXPECT_DOUBLE_EQ(r.serving.weights_fp16, 2.0 * double(c.num_parameters()));
}

TEST(Plan, StepTimeTokensAndMfuAgree) {
  ModelConfig c = tiny_config();
  c.num_layers = 8;
  PlanInputs in = test_util::plan_inputs(c, 2, 4, 2, 1, 64);
  in.gpu = find_gpu("a100-80gb");
  in.precision = Precision::BF16;
  in.train_tokens = 1e9;
  const PlanResult r = make_plan(in);
  ASSERT_TRUE(r.timing.has_value());
  const Timing& t = *r.timing;
  EXPECT_FALSE(t.mfu_assumed);
  EXPECT_DOUBLE_EQ(t.tokens_per_s, double(r.batch_tokens) / t.step_s);
  EXPECT_NEAR(t.mfu, r.flops.train * t.tokens_per_s / (16 * 312e12), 1e-12);
  EXPECT_GT(t.step_s, t.pipeline_s);  // + ZeRO-1's collectives
  EXPECT_NEAR(t.train_s, 1e9 / t.tokens_per_s, 1e-9 * t.train_s);
  // A ramp-up's small batches have a larger bubble: the run takes longer.
  in.rampup = {16, 16, 100000};
  EXPECT_GT(make_plan(in).timing->train_s, t.train_s);
  // At an assumed MFU, the step is the model FLOPs at that share of the peak.
  in.mfu = 0.4;
  const PlanResult a = make_plan(in);
  const double assumed = r.flops.train * double(r.batch_tokens) / (0.4 * 16 * 312e12);
  EXPECT_NEAR(a.timing->step_s, assumed, 1e-9 * assumed);
  EXPECT_NEAR(a.timing->train_s, 1e9 / a.timing->tokens_per_s, 1e-6 * a.timing->train_s);
}

TEST(Plan, SearchKeepsWhatFitsFastestFirstAndSaysWhyOthersWent) {
  ModelConfig c{.vocab_size = 32000, .hidden_size = 4096, .num_layers = 32, .num_heads = 32,
                .num_query_groups = 8, .ffn_hidden_size = 14336, .num_experts = 8, .router_topk = 2,
                .seq_length = 4096};
  PlanInputs base = test_util::plan_inputs(c, 1, 1, 48, 1, 512);  // 48 GPUs: TP 3 and 6, DP 3 cannot be
  base.gpu = find_gpu("h100-80gb");
  base.precision = Precision::BF16;
  const SearchResult s = search_layouts(base, 8, 4);
  ASSERT_FALSE(s.kept.empty());
  bool memory_drop = false, split_drop = false;
  for (size_t i = 0; i < s.kept.size(); ++i) {
    const SearchCandidate& k = s.kept[i];
    EXPECT_LE(k.layout.tp, 8);
    EXPECT_EQ(k.layout.tp * k.layout.pp * k.layout.dp, 48);
    EXPECT_LE(k.memory, base.gpu->memory_bytes);
    if (i > 0) {
      EXPECT_GE(s.kept[i - 1].tokens_per_s, k.tokens_per_s);
    }
  }
  for (const SearchCandidate& d : s.dropped) {
    EXPECT_FALSE(d.dropped.empty());
    memory_drop |= d.drop == Drop::Memory && d.memory > base.gpu->memory_bytes;
    split_drop |= d.drop == Drop::TensorParallel || d.drop == Drop::StageSplit || d.drop == Drop::BatchSplit;
  }
  EXPECT_TRUE(memory_drop);  // 47B parameters do not fit one 80 GB GPU with their optimizer
  EXPECT_TRUE(split_drop);
  // EP is searched, over divisors of DP that divide E; an EP layout holds
  // less model state (weights, gradients, optimizer) than the same layout
  // without EP (its expert rows, sized for the worst case, may take more).
  const SearchCandidate* with_ep = nullptr;
  for (const SearchCandidate& k : s.kept)
    if (k.layout.ep > 1 && !with_ep) with_ep = &k;
  ASSERT_NE(with_ep, nullptr) << "no expert-parallel layout kept";
  EXPECT_EQ(with_ep->layout.dp % with_ep->layout.ep, 0);
  EXPECT_EQ(c.num_experts % with_ep->layout.ep, 0);
  auto model_state = [&](int ep) {
    PlanInputs in = base;
    in.layout = with_ep->layout;
    in.layout.ep = ep;
    const RankMemory& m = make_plan(in).ranks[0];
    return m.weights + m.gradients + m.optimizer;
  };
  EXPECT_LT(model_state(with_ep->layout.ep), 0.75 * model_state(1));
  // The best layout's figures are make_plan's for that layout.
  PlanInputs best = base;
  best.layout = s.kept[0].layout;
  const PlanResult p = make_plan(best);
  EXPECT_DOUBLE_EQ(p.timing->tokens_per_s, s.kept[0].tokens_per_s);
  EXPECT_DOUBLE_EQ(p.ranks[size_t(p.largest_rank)].total(), s.kept[0].memory);
  // Sequence parallelism is tried at TP > 1: each kept layout's other
  // setting either does not fit or is no faster.
  bool sp_kept = false;
  for (const SearchCandidate& k : s.kept) {
    if (k.layout.tp == 1) {
      EXPECT_FALSE(k.layout.sequence_parallel);
      continue;
    }
    sp_kept |= k.layout.sequence_parallel;
    PlanInputs other = base;
    other.layout = k.layout;
    other.layout.sequence_parallel = !k.layout.sequence_parallel;
    const PlanResult o = make_plan(other);
    EXPECT_TRUE(!o.fits || o.timing->tokens_per_s <= k.tokens_per_s)
        << "TP " << k.layout.tp << " PP " << k.layout.pp << " EP " << k.layout.ep << " mbs " << k.layout.micro_batch;
  }
  EXPECT_TRUE(sp_kept) << "no layout kept with sequence parallelism";
  // TP 16 (two nodes) only when asked.
  bool tp16 = false;
  for (const SearchCandidate& k : search_layouts(base, 16, 1).kept) tp16 |= k.layout.tp == 16;
  EXPECT_TRUE(tp16);
}

}  // namespace
}  // namespace mt
