// The core test of pipeline parallelism (docs/design.md section 4): a model split
// into stages (and, within them, over a TP group) trains the same model as
// one rank. Run under mpirun with 2, 4, 8 and 15 ranks (tests/CMakeLists.txt):
// every layout TP x PP = world with TP in {1, 2}, both schedules, even and
// uneven splits; every rank also trains the single-rank model and compares.
#include <gtest/gtest.h>
#include <mpi.h>

#include <cmath>
#include <random>

#include "parallel/pipeline_runner.h"
#include "optim/adamw.h"
#include "run_trace.h"
#include "parallel/topology.h"

namespace mt {
namespace {

ModelConfig tiny(int layers, int experts) {
  ModelConfig m{.vocab_size = 64, .hidden_size = 32, .num_layers = layers, .num_heads = 4,
                .num_query_groups = 1, .ffn_hidden_size = 32, .num_experts = experts,
                .router_topk = experts > 1 ? 2 : 1, .seq_length = 8};
  return m;
}

constexpr int kSteps = 12, kMicro = 2;
// Micro-batches of step s: 1 to 4, fewer and more than the stages.
int micro_batches(int s) { return 1 + s % 4; }

// One step: its micro-batches of random tokens, the same on every rank.
std::vector<std::vector<int32_t>> step_tokens(std::mt19937& rng, const ModelConfig& cfg, int m) {
  std::vector<std::vector<int32_t>> t(m, std::vector<int32_t>(size_t(kMicro) * (cfg.seq_length + 1)));
  for (auto& mb : t)
    for (auto& x : mb) x = int32_t(rng() % cfg.vocab_size);
  return t;
}

AdamWConfig adam_config() {
  AdamWConfig adam;
  adam.clip_grad = 0.5;  // clipping active: the norm must count every stage
  return adam;
}

template <typename T>
// perturbation != 0: every weight moved by that much (relative) at the
// start and after every update.
test_util::RunTrace train_reference(const ModelConfig& cfg, double perturbation = 0.0) {
  auto be = make_cpu_backend<T>();
  Transformer<T> model(*be, cfg, kMicro);
  AdamW<T> optim(*be, adam_config(), model.params());
  model.params().initialise(*be, 3);
  if (perturbation != 0.0) model.params().perturb(*be, perturbation, 0);
  std::mt19937 rng(17);
  test_util::RunTrace run;
  for (int s = 0; s < kSteps; ++s) {
    const int m = micro_batches(s);
    const auto tokens = step_tokens(rng, cfg, m);
    const double ce_scale = 1.0 / (double(m) * kMicro * cfg.seq_length), aux_scale = 1.0 / m;
    model.backend().fill(model.params().grads.data(), T(0), model.params().size());
    double loss = 0;
    for (const auto& mb : tokens) {
      const MicroBatchLoss l = model.forward_backward(mb.data(), kMicro, ce_scale, aux_scale);
      loss += l.ce_sum * ce_scale + l.aux * aux_scale;
    }
    const double norm = optim.step(model.params(), 3e-3);
    if (perturbation != 0.0) model.params().perturb(*be, perturbation, s + 1);
    run.record(model, loss, norm);
  }
  return run;
}

struct Layout {
  int tp_size;
  PipelineSchedule schedule;
  bool uneven;
};

// One layer a stage at 8 and 15 stages (the GPT-4-like depth of the issue),
// two below; uneven: the first stage one layer, the others two.
int layout_layers(const Layout& layout, int stages) {
  const int even_layers = stages >= 8 ? stages : 2 * stages;
  return layout.uneven ? 1 + 2 * (stages - 1) : even_layers;
}

// The layout trained over every rank of the world; also checks how many
// micro-batches each stage keeps alive.
template <typename T>
test_util::RunTrace train_layout(const Layout& layout, const ModelConfig& cfg) {
  int world = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  const int stages = world / layout.tp_size;
  auto be = make_cpu_backend<T>();
  Topology topo(MPI_COMM_WORLD, TopologyConfig{layout.tp_size, stages});
  const ProcessGroup& tp = topo.tp();
  const int stage = topo.coords().pp;
  const auto split = stage_layers(cfg.num_layers, stages, layout.uneven && stages > 1 ? 1 : 0, 0);
  const StageSpan span{split[stage].first, split[stage].second, stage == 0, stage == stages - 1};
  Transformer<T> model(*be, cfg, kMicro, tp, span);
  AdamW<T> optim(*be, adam_config(), model.params(), tp, topo.pp());
  model.params().initialise(*be, 3);
  PipelineRunner<T> runner(model, topo.pp(), layout.schedule);

  std::mt19937 rng(17);
  test_util::RunTrace run;
  int most_live = 0;
  for (int s = 0; s < kSteps; ++s) {
    const int m = micro_batches(s);
    const auto tokens = step_tokens(rng, cfg, m);
    std::vector<const int32_t*> ptrs;
    for (const auto& mb : tokens) ptrs.push_back(mb.data());
    const double ce_scale = 1.0 / (double(m) * kMicro * cfg.seq_length), aux_scale = 1.0 / m;
    be->fill(model.params().grads.data(), T(0), model.params().size());
    PipelineStats stats;
    const MicroBatchLoss l = runner.step(ptrs, kMicro, ce_scale, aux_scale, &stats);
    double sums[2] = {l.ce_sum, l.aux};
    topo.pp().all_reduce_sum(sums, 2);
    model.reduce_partial_grads();
    const double norm = optim.step(model.params(), 3e-3);
    run.record(model, sums[0] * ce_scale + sums[1] * aux_scale, norm, &topo.world());
    // Memory: 1F1B keeps at most PP - stage micro-batches alive, GPipe all.
    const int expected_live = layout.schedule == PipelineSchedule::GPipe ? m : std::min(stages - stage, m);
    EXPECT_EQ(stats.peak_live, expected_live) << "stage " << stage << " step " << s + 1;
    most_live = std::max(most_live, expected_live);
  }
  EXPECT_EQ(model.slots(), most_live) << "activation sets allocated on stage " << stage;
  return run;
}

// Every layout TP x PP = world with TP in {1, 2}, both schedules, even and
// uneven splits, against the one-rank runs of the same model.
template <class Compare>
void check_every_layout(int experts, Compare compare) {
  int world = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  for (int tp : {1, 2}) {
    if (world % tp) continue;  // TP must divide the world (15 ranks: TP = 1 only)
    for (PipelineSchedule schedule : {PipelineSchedule::OneFOneB, PipelineSchedule::GPipe})
      for (bool uneven : {false, true}) {
        if (uneven && world / tp < 2) continue;  // one stage has no split to make uneven
        const Layout layout{tp, schedule, uneven};
        const int layers = layout_layers(layout, world / tp);
        SCOPED_TRACE(::testing::Message() << "TP=" << tp << " PP=" << world / tp << " L=" << layers
                                          << (schedule == PipelineSchedule::GPipe ? " gpipe" : " 1f1b")
                                          << (uneven ? " uneven" : " even"));
        compare(layout, tiny(layers, experts));
      }
  }
}

// Within the derived bound of tests/rounding_bound.h in precision T.
template <typename T>
void check_trains_like_one_rank(int experts) {
  check_every_layout(experts, [](const Layout& layout, const ModelConfig& cfg) {
    test_util::expect_trains_like_one_rank<T>(
        train_layout<T>(layout, cfg), [&](double perturbation) { return train_reference<T>(cfg, perturbation); },
        layout.tp_size);
  });
}

TEST(PipelineParallel, MoeTrainsTheSameModelAsOneRankInDouble) { check_trains_like_one_rank<double>(4); }
TEST(PipelineParallel, DenseTrainsTheSameModelAsOneRankInDouble) { check_trains_like_one_rank<double>(1); }
TEST(PipelineParallel, MoeTrainsTheSameModelAsOneRankInFloat) { check_trains_like_one_rank<float>(4); }

}  // namespace
}  // namespace mt
