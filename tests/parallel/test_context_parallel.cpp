// Context parallelism in the transformer (docs/design.md section 9): each
// sample's tokens split over the CP ranks in the load-balanced chunks, RoPE
// at each row's position in the whole sample, attention by the ring; with
// the gradients summed over CP, a dense model trains what one rank trains.
// Run under mpirun at 2 and 4 ranks, all of them one CP group.
#include <gtest/gtest.h>
#include <mpi.h>

#include <random>

#include "model/transformer.h"
#include "optim/adamw.h"
#include "run_trace.h"
#include "runtime/communicator.h"
#include "test_util.h"

namespace mt {
namespace {

struct CpCase {
  const char* name;
  int G;
  bool documents;
};

ModelConfig dense(const CpCase& c) {
  ModelConfig m{.vocab_size = 64, .hidden_size = 32, .num_layers = 2, .num_heads = 4, .num_query_groups = c.G,
                .ffn_hidden_size = 32, .num_experts = 1, .router_topk = 1, .seq_length = 32};
  if (c.documents) {
    m.reset_position_ids = m.reset_attention_mask = true;
    m.eod_token = 3;  // of 64 random ids: a document every 64 tokens or so
  }
  m.validate();
  return m;
}

constexpr int kSteps = 10, kMicro = 2, kBatch = 2;

// kSteps steps of kMicro micro-batches of random whole samples, the same on
// every rank; the gradients summed over `cp` (CP ranks hold the same weights
// and see other tokens), then AdamW alike on every rank.
template <typename T>
test_util::RunTrace train(const ModelConfig& cfg, const ProcessGroup& cp, double perturbation) {
  auto be = make_cpu_backend<T>();
  Transformer<T> model(*be, cfg, kBatch, {}, {}, 1, {}, {}, {.cp = cp});
  AdamWConfig adam;
  adam.clip_grad = 0.5;
  AdamW<T> optim(*be, adam, model.params());
  model.params().initialise(*be, 5);
  if (perturbation != 0.0) model.params().perturb(*be, perturbation, 0);
  std::mt19937 rng(17);
  std::vector<int32_t> tokens(size_t(kBatch) * (cfg.seq_length + 1));
  const double ce_scale = 1.0 / (double(kMicro) * kBatch * cfg.seq_length), aux_scale = 1.0 / kMicro;
  test_util::RunTrace run;
  for (int s = 0; s < kSteps; ++s) {
    be->fill(model.params().grads.data(), T(0), model.params().size());
    double ce = 0;
    for (int j = 0; j < kMicro; ++j) {
      for (auto& t : tokens) t = int32_t(rng() % cfg.vocab_size);
      ce += model.forward_backward(tokens.data(), kBatch, ce_scale, aux_scale).ce_sum;
    }
    cp.all_reduce_sum(&ce, 1);
    cp.all_reduce_sum(model.params().grads.data(), model.params().size());
    const double norm = optim.step(model.params(), 3e-3);
    if (perturbation != 0.0) model.params().perturb(*be, perturbation, s + 1);
    run.record(model, ce * ce_scale, norm);
  }
  return run;
}

// The whole world as one CP group.
struct WorldAsCp {
  MpiCommunicator comm{MPI_COMM_WORLD};
  const ProcessGroup cp{&comm, comm.rank(), comm.size()};
};

template <typename T>
void check(const CpCase& c) {
  const WorldAsCp world;
  if (world.cp.size == 1) GTEST_SKIP() << "runs under mpirun (tests/CMakeLists.txt)";
  const ModelConfig cfg = dense(c);
  const test_util::RunTrace split = train<T>(cfg, world.cp, 0.0);
  test_util::expect_trains_like_one_rank<T>(
      split, [&](double perturbation) { return train<T>(cfg, ProcessGroup{}, perturbation); }, world.cp.size);
}

class ContextParallelDouble : public ::testing::TestWithParam<CpCase> {};
class ContextParallelFloat : public ::testing::TestWithParam<CpCase> {};
TEST_P(ContextParallelDouble, TrainsTheSameModelAsOneRank) { check<double>(GetParam()); }
TEST_P(ContextParallelFloat, TrainsTheSameModelAsOneRank) { check<float>(GetParam()); }

const CpCase kMqa{"mqa", 1, false}, kGqaDocuments{"gqa_documents", 2, true}, kMha{"mha", 4, false};
auto case_name = [](const auto& info) { return std::string(info.param.name); };
INSTANTIATE_TEST_SUITE_P(Dense, ContextParallelDouble, ::testing::Values(kMqa, kGqaDocuments, kMha), case_name);
INSTANTIATE_TEST_SUITE_P(Dense, ContextParallelFloat, ::testing::Values(kMqa, kGqaDocuments), case_name);

TEST(ContextParallelShape, SequencesThatDoNotSplitAndExpertsAreRefusedByName) {
  const WorldAsCp world;
  if (world.cp.size == 1) GTEST_SKIP() << "runs under mpirun (tests/CMakeLists.txt)";
  const ProcessGroup& cp = world.cp;
  auto be = make_cpu_backend<double>();
  ModelConfig odd = dense({"", 1, false});
  odd.seq_length = 2 * cp.size * 3 + 2;
  test_util::expect_error([&] { Transformer<double>(*be, odd, 1, {}, {}, 1, {}, {}, {.cp = cp}); },
                          {"--seq-length " + std::to_string(odd.seq_length) + " does not divide by"});
  ModelConfig moe = dense({"", 1, false});
  moe.num_experts = 4;
  moe.router_topk = 2;
  test_util::expect_error([&] { Transformer<double>(*be, moe, 1, {}, {}, 1, {}, {}, {.cp = cp}); },
                          {"with a mixture of experts"});
}

}  // namespace
}  // namespace mt
