// Finite-difference check of every parameter kind, in double precision,
// through the same model code that trains in float.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "model/transformer.h"

namespace mt {
namespace {

struct GradCase {
  const char* name;
  int G, E, K;
  double capacity;
};

ModelConfig tiny(const GradCase& c) {
  ModelConfig cfg{.vocab_size = 32, .hidden_size = 16, .num_layers = 2, .num_heads = 4, .num_query_groups = c.G,
                  .ffn_hidden_size = 24, .num_experts = c.E, .router_topk = c.K, .seq_length = 6,
                  .capacity_factor = c.capacity, .aux_loss_coeff = 0.05};
  return cfg;
}

class GradCheck : public ::testing::TestWithParam<GradCase> {};

TEST_P(GradCheck, EveryParameterMatchesFiniteDifferences) {
  const GradCase c = GetParam();
  const ModelConfig cfg = tiny(c);
  const int B = 2;
  auto be = make_cpu_backend<double>();
  Transformer<double> model(*be, cfg, B);
  Parameters<double>& p = model.params();
  p.initialise(*be, 1234);
  // Larger weights than the 0.02 init make every path's gradient visible,
  // and norm gains away from 1 exercise their gradient.
  std::mt19937 rng(7);
  std::normal_distribution<double> normal(0.0, 0.3);
  for (size_t i = 0; i < p.size(); ++i) p.values.data()[i] = normal(rng);
  for (const auto& t : p.tensors)
    if (t.is_norm)
      for (size_t i = 0; i < t.numel; ++i) p.values.data()[t.offset + i] = 1.0 + normal(rng);

  std::vector<int32_t> tokens(B * (cfg.seq_length + 1));
  for (auto& t : tokens) t = int32_t(rng() % cfg.vocab_size);
  const double ce_scale = 1.0 / (B * cfg.seq_length), aux_scale = 1.0;
  auto loss = [&]() {
    MicroBatchLoss l = model.forward(tokens.data(), B);
    return l.ce_sum * ce_scale + l.aux * aux_scale;
  };

  be->fill(p.grads.data(), 0.0, p.size());
  model.forward_backward(tokens.data(), B, ce_scale, aux_scale);

  const double h = 1e-6;
  for (const auto& t : p.tensors) {
    // A spread of elements of each tensor, always including the first and last.
    std::vector<size_t> idx = {0, t.numel - 1};
    for (int i = 0; i < 6; ++i) idx.push_back(rng() % t.numel);
    double max_grad = 0.0;
    for (size_t i : idx) {
      double* v = p.values.data() + t.offset + i;
      const double saved = *v;
      *v = saved + h;
      const double up = loss();
      *v = saved - h;
      const double down = loss();
      *v = saved;
      const double fd = (up - down) / (2 * h);
      const double an = p.grads.data()[t.offset + i];
      max_grad = std::max(max_grad, std::abs(an));
      EXPECT_NEAR(an, fd, 1e-6 + 1e-5 * std::abs(fd)) << t.name << "[" << i << "]";
    }
    // The check must not pass on all-zero gradients: every tensor gets one.
    double norm = 0.0;
    for (size_t i = 0; i < t.numel; ++i) norm += std::abs(p.grads.data()[t.offset + i]);
    EXPECT_GT(norm, 1e-8) << t.name << " has no gradient at all";
  }
}

INSTANTIATE_TEST_SUITE_P(
    Model, GradCheck,
    ::testing::Values(GradCase{"moe_mqa_top2", 1, 4, 2, 0.0}, GradCase{"moe_gqa_top2", 2, 4, 2, 0.0},
                      GradCase{"moe_mha_capacity", 4, 4, 2, 0.75},
                      GradCase{"moe_top1", 1, 3, 1, 0.0}, GradCase{"dense_mqa", 1, 1, 1, 0.0},
                      GradCase{"dense_gqa", 2, 1, 1, 0.0}),
    [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace mt
