// The core test of pipeline parallelism (DESIGN.md section 4): a model split
// into stages (and, within them, over a TP group) trains the same model as
// one rank. Run under mpirun with 2, 4, 8 and 15 ranks (tests/CMakeLists.txt):
// every layout TP x PP = world with TP in {1, 2}, both schedules, even and
// uneven splits; every rank also trains the single-rank model and compares.
#include <gtest/gtest.h>
#include <mpi.h>

#include <cmath>
#include <random>

#include "model/pipeline_step.h"
#include "optim/adamw.h"
#include "runtime/topology.h"

namespace mt {
namespace {

ModelConfig tiny(int layers, int experts) {
  ModelConfig m;
  m.vocab_size = 64;
  m.hidden_size = 32;
  m.num_layers = layers;
  m.num_heads = 4;
  m.num_query_groups = 1;
  m.ffn_hidden_size = 32;
  m.num_experts = experts;
  m.router_topk = experts > 1 ? 2 : 1;
  m.seq_length = 8;
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

template <typename T>
std::vector<double> train_reference(Transformer<T>& model, AdamW<T>& optim, const ModelConfig& cfg) {
  std::mt19937 rng(17);
  std::vector<double> losses;
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
    optim.step(model.params(), 3e-3);
    losses.push_back(loss);
  }
  return losses;
}

template <typename T>
void check_layout(int tp_size, PipelineSchedule schedule, bool uneven, int experts, double loss_tol,
                  double param_tol) {
  int world = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  const int stages = world / tp_size;
  // One layer a stage at 8 and 15 stages (the GPT-4-like depth of the issue),
  // two below; uneven: the first stage one layer, the others two.
  const int even_layers = stages >= 8 ? stages : 2 * stages;
  const int layers = uneven ? 1 + 2 * (stages - 1) : even_layers;
  const ModelConfig cfg = tiny(layers, experts);
  SCOPED_TRACE(::testing::Message() << "TP=" << tp_size << " PP=" << stages << " L=" << layers
                                    << (schedule == PipelineSchedule::GPipe ? " gpipe" : " 1f1b")
                                    << (uneven ? " uneven" : " even"));
  AdamWConfig adam;
  adam.clip_grad = 0.5;  // clipping active: the norm must count every stage

  auto be = make_cpu_backend<T>();
  Transformer<T> ref(*be, cfg, kMicro);
  AdamW<T> ref_optim(*be, adam, ref.params());
  ref.params().initialise(*be, 3);
  const std::vector<double> ref_losses = train_reference(ref, ref_optim, cfg);

  Topology topo(MPI_COMM_WORLD, TopologyConfig{tp_size, stages});
  const TensorParallel tp{&topo.tp(), topo.coords().tp, tp_size};
  const int stage = topo.coords().pp;
  const auto split = stage_layers(layers, stages, uneven && stages > 1 ? 1 : 0, 0);
  const StageSpan span{split[stage].first, split[stage].second, stage == 0, stage == stages - 1};
  Transformer<T> model(*be, cfg, kMicro, tp, span);
  AdamW<T> optim(*be, adam, model.params(), tp, &topo.pp());
  model.params().initialise(*be, 3);
  PipelineRunner<T> runner(model, PipelineGroup{&topo.pp(), stage, stages}, schedule);

  std::mt19937 rng(17);
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
    optim.step(model.params(), 3e-3);
    const double loss = sums[0] * ce_scale + sums[1] * aux_scale;
    EXPECT_LE(std::abs(loss - ref_losses[s]), loss_tol * std::abs(ref_losses[s])) << "step " << s + 1;
    // Memory: 1F1B keeps at most PP - stage micro-batches alive, GPipe all.
    const int expected_live = schedule == PipelineSchedule::GPipe ? m : std::min(stages - stage, m);
    EXPECT_EQ(stats.peak_live, expected_live) << "stage " << stage << " step " << s + 1;
    most_live = std::max(most_live, expected_live);
  }
  EXPECT_EQ(model.slots(), most_live) << "activation sets allocated on stage " << stage;

  // This rank's tensors (its stage, its TP block) against the one-rank model.
  for (const ParamTensor& t : model.params().tensors) {
    const ParamTensor& rt = ref.params().find(t.name);
    double worst = 0;
    for (size_t i = 0; i < t.numel; ++i)
      worst = std::max(worst, double(std::abs(model.params().values.data()[t.offset + i] -
                                              ref.params().values.data()[rt.offset + t.logical_index(i)])));
    EXPECT_LE(worst, param_tol) << t.name;
  }
}

template <typename T>
void check_every_layout(int experts, double loss_tol, double param_tol) {
  int world = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  for (int tp : {1, 2}) {
    if (world % tp) continue;  // TP must divide the world (15 ranks: TP = 1 only)
    for (PipelineSchedule schedule : {PipelineSchedule::OneFOneB, PipelineSchedule::GPipe})
      for (bool uneven : {false, true}) {
        if (uneven && world / tp < 2) continue;  // one stage has no split to make uneven
        check_layout<T>(tp, schedule, uneven, experts, loss_tol, param_tol);
      }
  }
}

TEST(PipelineParallel, MoeTrainsTheSameModelAsOneRankInDouble) { check_every_layout<double>(4, 1e-11, 1e-11); }
TEST(PipelineParallel, DenseTrainsTheSameModelAsOneRankInDouble) { check_every_layout<double>(1, 1e-11, 1e-11); }
// fp32: the bound on losses; weights within 2e-5 after 12 AdamW
// steps of lr 3e-3.
TEST(PipelineParallel, MoeTrainsTheSameModelAsOneRankInFloat) { check_every_layout<float>(4, 1e-5, 2e-5); }

}  // namespace
}  // namespace mt
