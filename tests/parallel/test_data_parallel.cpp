// ZeRO-1 data parallelism and expert parallelism (docs/design.md sections 4
// and 8). The bucket and shard arithmetic on its own; then the core test:
// every TP x PP x DP layout of the world (run under mpirun with 2, 4 and 8
// ranks), and every EP that splits its DP, trains the same model as one
// rank, step by step (loss and global gradient norm) and element by
// element; and the expert-parallel bugs other frameworks have shipped
// (expert gradients scaled by EP, no expert-DP reduction) fail that test.
#include <fmt/format.h>
#include <gtest/gtest-spi.h>
#include <gtest/gtest.h>
#include <mpi.h>

#include <cfloat>
#include <cmath>
#include <random>

#include "parallel/pipeline_runner.h"
#include "optim/adamw.h"
#include "parallel/grad_sync.h"
#include "moe_designs.h"
#include "run_trace.h"
#include "parallel/topology.h"

namespace mt {
namespace {

TEST(GradBuckets, CoverThePaddedBufferFromItsEndInMultiplesOfDp) {
  for (int dp : {1, 2, 3, 4, 8})
    for (size_t n : {1ul, 7ul, 1000ul, 1001ul, 4099ul})
      for (size_t bucket : {1ul, 5ul, 64ul, 1000ul, 100000ul}) {
        SCOPED_TRACE(::testing::Message() << "dp " << dp << " n " << n << " bucket " << bucket);
        const size_t padded = padded_size(n, dp);
        ASSERT_EQ(padded % dp, 0u);
        ASSERT_LT(padded - n, size_t(dp));
        const auto buckets = grad_buckets(padded, dp, bucket);
        size_t expect_begin = 0;
        for (size_t i = 0; i < buckets.size(); ++i) {
          EXPECT_EQ(buckets[i].begin, expect_begin);
          EXPECT_GT(buckets[i].size(), 0u);
          EXPECT_EQ(buckets[i].size() % dp, 0u);
          // Every bucket but the lowest has the full (rounded) size.
          if (i > 0) {
            EXPECT_EQ(buckets[i].size(), padded_size(bucket, dp));
          }
          expect_begin = buckets[i].end;
        }
        EXPECT_EQ(expect_begin, padded);
        // The ranks' shards split every element between them exactly once.
        std::vector<int> owners(padded, 0);
        for (int r = 0; r < dp; ++r) {
          size_t total = 0;
          for (const FlatRange& s : shard_ranges(buckets, dp, r)) {
            total += s.size();
            for (size_t i = s.begin; i < s.end; ++i) owners[i] += 1;
          }
          EXPECT_EQ(total, padded / dp);
        }
        EXPECT_EQ(std::count(owners.begin(), owners.end(), 1), std::ptrdiff_t(padded));
      }
}

TEST(ShardSegments, SplitAtTensorsSkipPaddingAndCountReplicatedTensorsOnTpRankZero) {
  ModelConfig cfg{.vocab_size = 64, .hidden_size = 16, .num_layers = 1, .num_heads = 2, .ffn_hidden_size = 8,
                  .num_experts = 2};
  for (int tp_rank : {0, 1}) {
    const auto tensors = param_table(cfg, tp_rank, 2);
    const size_t n = tensors.back().offset + tensors.back().numel;
    const int dp = 3;
    const auto buckets = grad_buckets(padded_size(n, dp), dp, 100);
    std::vector<int> covered(n, 0);
    for (int r = 0; r < dp; ++r)
      for (const ShardSegment& s : shard_segments(tensors, shard_ranges(buckets, dp, r), tp_rank)) {
        ASSERT_LE(s.flat + s.count, n) << "a segment reaches into the padding";
        const ParamTensor* owner = nullptr;
        for (const auto& t : tensors)
          if (s.flat >= t.offset && s.flat < t.offset + t.numel) owner = &t;
        ASSERT_NE(owner, nullptr);
        EXPECT_LE(s.flat + s.count, owner->offset + owner->numel) << "crosses out of " << owner->name;
        EXPECT_EQ(s.weight_decay, owner->weight_decay) << owner->name;
        EXPECT_EQ(s.in_norm, !owner->replicated() || tp_rank == 0) << owner->name;
        for (size_t i = s.flat; i < s.flat + s.count; ++i) covered[i] += 1;
      }
    EXPECT_EQ(std::count(covered.begin(), covered.end(), 1), std::ptrdiff_t(n));
  }
}

// Heads, F and V divisible by 2; the width makes parameter counts that 4
// and 8 do not divide, so the shards are padded.
ModelConfig tiny(int layers) {
  ModelConfig m{.vocab_size = 62, .hidden_size = 20, .num_layers = layers, .num_heads = 2,
                .num_query_groups = 1, .ffn_hidden_size = 18, .num_experts = 4, .router_topk = 2,
                .seq_length = 8};
  return m;
}

constexpr int kSteps = 20, kMicro = 2;
// Micro-batches per replica in step s: 1 to 3, a ramp-up of the global
// batch and gradient accumulation.
int micro_batches(int s) { return 1 + s / 7; }

std::vector<std::vector<int32_t>> step_tokens(std::mt19937& rng, const ModelConfig& cfg, int m) {
  std::vector<std::vector<int32_t>> t(m, std::vector<int32_t>(size_t(kMicro) * (cfg.seq_length + 1)));
  for (auto& mb : t)
    for (auto& x : mb) x = int32_t(rng() % cfg.vocab_size);
  return t;
}

AdamWConfig adam_config() {
  AdamWConfig adam;
  adam.clip_grad = 0.5;  // clipping active: the norm must count every element once
  return adam;
}

// Errors planted in the expert-parallel gradient path, to show the
// equivalence test catches them.
enum class ExpertBug { None, GradientsScaledByEp, NoExpertDpReduction };

// Router weights zeroed at the start: every token's probabilities tie and
// top-K takes the lowest experts, so at EP = 2 every token goes to EP rank
// 0's experts and EP rank 1's receive nothing (the first step's routing).
template <typename T>
void zero_router(Parameters<T>& p, const ModelConfig& cfg) {
  for (int l = 0; l < cfg.num_layers; ++l)
    if (const ParamTensor* t = p.find_or_null(fmt::format("layers/{}/router", l)))
      std::fill(p.values.data() + t->offset, p.values.data() + t->offset + t->numel, T(0));
}

// The global batch of every step on one rank: dp replicas' micro-batches;
// perturbation != 0: every weight moved by that much (relative) at the
// start and after every update.
template <typename T>
test_util::RunTrace train_reference(const ModelConfig& cfg, int dp, double perturbation = 0.0,
                                    bool router_zeroed = false) {
  auto be = make_cpu_backend<T>();
  Transformer<T> model(*be, cfg, kMicro);
  AdamW<T> optim(*be, adam_config(), model.params());
  model.params().initialise(*be, 3);
  if (router_zeroed) zero_router(model.params(), cfg);
  if (perturbation != 0.0) model.params().perturb(*be, perturbation, 0);
  std::mt19937 rng(5);
  test_util::RunTrace run;
  for (int s = 0; s < kSteps; ++s) {
    const int m = dp * micro_batches(s);  // the global batch's micro-batches
    const auto tokens = step_tokens(rng, cfg, m);
    const double ce_scale = 1.0 / (double(m) * kMicro * cfg.seq_length), aux_scale = 1.0 / m;
    model.start_step();
    model.backend().fill(model.params().grads.data(), T(0), model.params().size());
    double loss = 0;
    for (const auto& mb : tokens) {
      const MicroBatchLoss l = model.forward_backward(mb.data(), kMicro, ce_scale, aux_scale);
      loss += l.ce_sum * ce_scale + l.aux * aux_scale;
    }
    const double norm = optim.step(model.params(), 3e-3);
    model.update_router_state(ProcessGroup{});
    if (perturbation != 0.0) model.params().perturb(*be, perturbation, s + 1);
    run.record(model, loss, norm);
  }
  return run;
}

// TP x PP x DP = world, the experts split EP ways: ZeRO-1 with small
// buckets that ignore tensor boundaries (many in flight at once) and padded
// shards, each region of the flat buffers over its group.
template <typename T>
test_util::RunTrace train_layout(int tp_size, int pp_size, const ModelConfig& cfg, int ep_size = 1,
                                 ExpertBug bug = ExpertBug::None, bool router_zeroed = false,
                                 bool sequence_parallel = false) {
  int world = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  const int dp = world / (tp_size * pp_size);
  auto be = make_cpu_backend<T>();
  Topology topo(MPI_COMM_WORLD, TopologyConfig{tp_size, pp_size, ep_size});
  EXPECT_EQ(topo.dp().size, dp);
  const ProcessGroup& tp = topo.tp();
  const int stage = topo.coords().pp, r = topo.coords().dp;
  const auto split = stage_layers(cfg.num_layers, pp_size, 0, 0);
  const StageSpan span{split[stage].first, split[stage].second, stage == 0, stage == pp_size - 1};
  Transformer<T> model(*be, cfg, kMicro, tp, span, dp, {}, topo.ep(), {.sequence_parallel = sequence_parallel});
  Parameters<T>& params = model.params();
  std::vector<FlatRange> partial;
  for (const ParamTensor& t : params.tensors)
    if (t.partial_grad) partial.push_back({t.offset, t.offset + t.numel});
  std::vector<ShardRegion> regions;
  for (const FlatRegion& g : params.regions)
    regions.push_back({{g.begin, g.end},
                       !g.experts                                ? topo.dp()
                       : bug == ExpertBug::NoExpertDpReduction ? ProcessGroup{}
                                                                 : topo.edp()});
  GradSync<T> sync(*be, regions, partial, tp, 301);
  AdamW<T> optim(*be, adam_config(), shard_segments(params.tensors, sync.shard(), tp.rank), sync.shard_size(),
                 {topo.tp(), topo.pp(), topo.dp()});
  params.initialise(*be, 3);
  if (router_zeroed) zero_router(params, cfg);
  PipelineRunner<T> runner(model, topo.pp(), PipelineSchedule::OneFOneB);

  // Memory: the optimizer state is this rank's 1/DP of the shared tensors
  // and 1/(DP/EP) of its E/EP experts (padded).
  size_t shard = 0;
  for (const FlatRegion& g : params.regions) {
    const size_t group = g.experts ? size_t(dp / ep_size) : size_t(dp);
    EXPECT_EQ(g.end % group, g.begin % group);
    if (bug == ExpertBug::None) shard += (g.end - g.begin) / group;
  }
  if (bug == ExpertBug::None) {
    EXPECT_EQ(optim.shard_size(), shard);
  }
  EXPECT_LT(params.padded_size() - params.size(), params.regions.size() * size_t(dp));
  for (const ParamTensor& t : params.tensors) {
    if (t.is_expert) {
      EXPECT_EQ(t.block.count[0], cfg.num_experts / ep_size) << t.name;
    }
  }

  std::mt19937 rng(5);
  test_util::RunTrace run;
  for (int s = 0; s < kSteps; ++s) {
    const int m = micro_batches(s);
    const auto tokens = step_tokens(rng, cfg, dp * m);
    std::vector<const int32_t*> mine;  // this replica's contiguous slice
    for (int j = 0; j < m; ++j) mine.push_back(tokens[size_t(r) * m + j].data());
    const double ce_scale = 1.0 / (double(dp * m) * kMicro * cfg.seq_length), aux_scale = 1.0 / (dp * m);
    model.start_step();
    be->fill(params.grads.data(), T(0), params.padded_size());
    T* grads = params.grads.data();
    sync.start_step();
    const GradsReady ready = [&](size_t from) { sync.ready_from(grads, from); };
    const MicroBatchLoss l = runner.step(mine, kMicro, ce_scale, aux_scale, nullptr, &ready);
    sync.finish(grads);
    if (bug == ExpertBug::GradientsScaledByEp)
      for (const ShardSegment& g : shard_segments(params.tensors, sync.shard(), tp.rank))
        for (const ParamTensor& t : params.tensors)
          if (t.is_expert && g.flat >= t.offset && g.flat < t.offset + t.numel)
            be->scale(g.count, T(ep_size), sync.shard_grads(grads) + g.shard);
    double sums[2] = {l.ce_sum, l.aux};
    topo.pp().all_reduce_sum(sums, 2);
    topo.dp().all_reduce_sum(sums, 2);
    const double norm = optim.step(params.values.data(), sync.shard_grads(grads), 3e-3);
    sync.all_gather(params.values.data());
    model.update_router_state(topo.dp());
    // Every replica holds the whole of its block after the all-gather.
    run.record(model, sums[0] * ce_scale + sums[1] * aux_scale, norm, &topo.world());
  }
  // Gradients went out while the backward pass still had layers to do.
  EXPECT_GT(sync.stats.buckets_overlapped, 0u);
  EXPECT_LT(sync.stats.buckets_overlapped, sync.stats.buckets);
  if (ep_size > 1) {
    EXPECT_GT(model.dispatch_stats().bytes_sent, 0u) << "no row went to another EP rank";
  }
  return run;
}

// The MoE designs of the last two years (docs/design.md section 3) on a
// model of `layers`, the first dense: DeepSeek-V3's (gated experts of their
// own width, a shared expert, sigmoid scores over expert groups balanced by
// the expert bias and the per-sequence loss, normalised queries and keys of
// their own head size) and Qwen2-MoE's (softmax scores over all experts, a
// gated shared expert, the global-batch loss).
enum class MoeDesign { Megatron, DeepSeek, Qwen };

void apply_design(ModelConfig& m, MoeDesign design) {
  if (design == MoeDesign::Megatron) return;
  m.swiglu = true;
  m.moe_ffn_hidden_size = 10;
  m.moe_layers.assign(size_t(m.num_layers), 1);
  m.moe_layers[0] = 0;
  m.shared_expert_size = 6;
  if (design == MoeDesign::DeepSeek) {
    test_util::deepseek_routing(m);
    m.qk_layernorm = true;
    m.kv_channels = 6;
  } else {
    m.shared_expert_gate = true;
    m.router_pre_softmax = true;
    m.load_balancing_type = "global_aux_loss";
  }
  m.validate();
}

// Every layout with TP in {1, 2} (2 alone with sequence parallelism), PP
// in {1, 2}, DP >= 2 and each EP of `eps` that divides DP (E = 4).
// Expert-parallel layouts alternate with and without a capacity factor that
// drops assignments (at 2 ranks, with).
template <class Compare>
void check_every_layout(std::initializer_list<int> eps, Compare compare, MoeDesign design = MoeDesign::Megatron,
                        bool sequence_parallel = false) {
  int world = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  if (world == 1) GTEST_SKIP() << "runs under mpirun (tests/CMakeLists.txt)";
  int layouts = 0;
  for (int tp : sequence_parallel ? std::vector<int>{2} : std::vector<int>{1, 2})
    for (int pp : {1, 2})
      for (int ep : eps) {
        const int dp = world / (tp * pp);
        if (world % (tp * pp) != 0 || dp < 2 || dp % ep != 0) continue;
        ModelConfig cfg = tiny(2 * pp);
        if (ep > 1 && (layouts % 2 == 1 || world == 2)) cfg.capacity_factor = 1.0;
        apply_design(cfg, design);
        SCOPED_TRACE(::testing::Message() << "TP=" << tp << " PP=" << pp << " DP=" << dp << " EP=" << ep
                                          << " capacity factor " << cfg.capacity_factor);
        compare(tp, pp, ep, cfg, dp);
        ++layouts;
      }
  EXPECT_GT(layouts, 0) << "no layout of " << world << " ranks";
}

// Within the derived bound of tests/rounding_bound.h in precision T; the
// expert bias, where the design has one, moved and equal to the one-rank
// run's at every step compared (run_trace.h).
template <typename T>
void check_trains_like_one_rank(std::initializer_list<int> eps, MoeDesign design = MoeDesign::Megatron,
                                bool sequence_parallel = false) {
  check_every_layout(
      eps,
      [&](int tp, int pp, int ep, const ModelConfig& cfg, int dp) {
        const test_util::RunTrace layout = train_layout<T>(tp, pp, cfg, ep, ExpertBug::None, false, sequence_parallel);
        test_util::expect_trains_like_one_rank<T>(
            layout, [&](double perturbation) { return train_reference<T>(cfg, dp, perturbation); },
            std::max(tp, dp));
        if (cfg.expert_bias) {
          EXPECT_TRUE(layout.expert_bias_moved());
        }
      },
      design, sequence_parallel);
}

TEST(DataParallel, TrainsTheSameModelAsOneRankInDouble) { check_trains_like_one_rank<double>({1}); }
TEST(DataParallel, TrainsTheSameModelAsOneRankInFloat) { check_trains_like_one_rank<float>({1}); }
TEST(ExpertParallel, TrainsTheSameModelAsOneRankInDouble) { check_trains_like_one_rank<double>({2, 4}); }
TEST(ExpertParallel, TrainsTheSameModelAsOneRankInFloat) { check_trains_like_one_rank<float>({2, 4}); }
// Every layout of TP, PP, DP and EP at once, for each design.
// Sequence parallelism with PP, DP and EP: the stage boundaries carry
// this TP rank's rows alone.
TEST(SequenceParallel, TrainsTheSameModelAsOneRankInDouble) {
  check_trains_like_one_rank<double>({1, 2}, MoeDesign::Megatron, true);
}
TEST(SequenceParallel, TrainsTheSameModelAsOneRankInFloat) {
  check_trains_like_one_rank<float>({1, 2}, MoeDesign::Qwen, true);
}

TEST(MoeDesigns, DeepSeekTrainsTheSameModelAsOneRankInDouble) {
  check_trains_like_one_rank<double>({1, 2}, MoeDesign::DeepSeek);
}
TEST(MoeDesigns, DeepSeekTrainsTheSameModelAsOneRankInFloat) {
  check_trains_like_one_rank<float>({1, 2}, MoeDesign::DeepSeek);
}
TEST(MoeDesigns, QwenTrainsTheSameModelAsOneRankInDouble) {
  check_trains_like_one_rank<double>({1, 2}, MoeDesign::Qwen);
}
TEST(MoeDesigns, QwenTrainsTheSameModelAsOneRankInFloat) { check_trains_like_one_rank<float>({1, 2}, MoeDesign::Qwen); }

// The first step sends every token to EP rank 0's experts (the router
// starts at zero, so the lowest experts win every tie): EP rank 1's
// experts receive no row, nothing hangs, and the run trains the one-rank
// model, with capacity dropping most assignments and without. Compared up
// to the first routing flip: the router's first updates leave near-ties
// that rounding can resolve either way, even in float64.
TEST(ExpertParallel, TrainsLikeOneRankWhenEveryTokenGoesToOneRanksExperts) {
  int world = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  if (world % 2 != 0) GTEST_SKIP() << "runs under mpirun on an even number of ranks";
  for (double capacity : {0.0, 1.0}) {
    ModelConfig cfg = tiny(2);
    cfg.capacity_factor = capacity;
    SCOPED_TRACE(::testing::Message() << "capacity factor " << capacity);
    const test_util::RunTrace layout = train_layout<double>(1, 1, cfg, 2, ExpertBug::None, true);
    ASSERT_FALSE(layout.steps.empty());
    const std::vector<int64_t>& routed = layout.steps[0].routing.routed;  // [layer][expert]
    for (size_t i = 0; i < routed.size(); ++i) {
      if (i % cfg.num_experts >= 2) {
        EXPECT_EQ(routed[i], 0) << "layer " << i / cfg.num_experts << " expert " << i % cfg.num_experts;
      }
    }
    const double ulp = DBL_EPSILON;
    const test_util::RunTrace ref = train_reference<double>(cfg, world, 0.0, true);
    const test_util::RunTrace twins = test_util::farther_of(ref, train_reference<double>(cfg, world, ulp, true),
                                                            train_reference<double>(cfg, world, -ulp, true));
    test_util::expect_same_run_to_rounding(layout, ref, twins, world, ulp);
  }
}

// The planted bugs fail the equivalence test (DP = 4 split EP = 2 x
// expert-DP = 2, so that an expert-DP reduction exists to drop).
TEST(ExpertParallel, ScaledOrUnreducedExpertGradientsFailTheEquivalenceTest) {
  int world = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  if (world != 4) GTEST_SKIP() << "runs under mpirun with 4 ranks";
  const ModelConfig cfg = tiny(2);
  for (ExpertBug bug : {ExpertBug::GradientsScaledByEp, ExpertBug::NoExpertDpReduction}) {
    SCOPED_TRACE(::testing::Message() << "bug " << int(bug));
    const test_util::RunTrace layout = train_layout<double>(1, 1, cfg, 2, bug);
    ::testing::TestPartResultArray failures;
    {
      ::testing::ScopedFakeTestPartResultReporter intercept(
          ::testing::ScopedFakeTestPartResultReporter::INTERCEPT_ONLY_CURRENT_THREAD, &failures);
      test_util::expect_trains_like_one_rank<double>(
          layout, [&](double perturbation) { return train_reference<double>(cfg, world, perturbation); }, world);
    }
    EXPECT_GT(failures.size(), 0) << "the equivalence test passed with the bug planted";
  }
}

}  // namespace
}  // namespace mt
