// Finite-difference check of every parameter kind, in double precision,
// through the same model code that trains in float; and the bf16 model's
// gradients against the float64 ones within the rounding of bf16.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "model/transformer.h"

namespace mt {
namespace {

struct GradCase {
  const char* name;
  int G, E, K;
  double capacity;
  double z = 0.0;                          // router z-loss coefficient
  void (*features)(ModelConfig&) = nullptr;  // the model's other options
};

ModelConfig tiny(const GradCase& c) {
  ModelConfig cfg{.vocab_size = 32, .hidden_size = 16, .num_layers = 2, .num_heads = 4, .num_query_groups = c.G,
                  .ffn_hidden_size = 24, .num_experts = c.E, .router_topk = c.K, .seq_length = 6,
                  .capacity_factor = c.capacity, .aux_loss_coeff = 0.05, .z_loss_coeff = c.z};
  if (c.features) c.features(cfg);
  return cfg;
}

// Stored T tensors a gradient passes through in a layer, forward and
// backward: 24, and each option's own (--qk-layernorm: q and k before their
// norm, forward, and their gradients before it, backward; --swiglu: the up
// projection and its gradient; a shared expert: an MLP's 8 beside the
// experts', and its gate's scaled output and gradient).
double stored_per_layer(const ModelConfig& cfg) {
  return 24.0 + (cfg.qk_layernorm ? 4.0 : 0.0) + (cfg.swiglu ? 2.0 : 0.0) + (cfg.shared_expert_size > 0 ? 8.0 : 0.0) +
         (cfg.shared_expert_gate ? 2.0 : 0.0);
}

class GradCheck : public ::testing::TestWithParam<GradCase> {};

// What routing keeps between steps, away from its start: an expert bias
// that reorders near experts, and global_aux_loss's shares of a last batch.
template <typename T>
void set_router_state(Transformer<T>& model) {
  for (RouterState& r : model.router_state()) {
    for (size_t e = 0; e < r.expert_bias.size(); ++e) r.expert_bias[e] = 0.1f * float(e % 3) - 0.05f;
    if (model.config().load_balancing_type == "global_aux_loss" && !r.kept.empty())
      r.global_share = {0.1f, 0.2f, 0.3f, 0.4f};
  }
}

TEST_P(GradCheck, EveryParameterMatchesFiniteDifferences) {
  const GradCase c = GetParam();
  const ModelConfig cfg = tiny(c);
  const int B = 2;
  auto be = make_cpu_backend<double>();
  Transformer<double> model(*be, cfg, B);
  set_router_state(model);
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
    if (c.z > 0) {
      EXPECT_GT(l.z, 0.0);
    }
    return l.ce_sum * ce_scale + (l.aux + l.z) * aux_scale;
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

// The bf16 model (bf16 weights and activations, float32 statistics and
// gradients) against the float64 model at the same weights (the bf16 ones,
// exactly), on the same tokens. Every stored bf16 tensor rounds its values
// by up to u = 2^-8 relative; a gradient passes through about R of them on
// its way (stored_per_layer, and 6 outside the layers), so
// each element may be off by R u of its tensor's largest gradient, and the
// median element, as roundings add up like a random walk, by 2 sqrt(R) u.
TEST_P(GradCheck, Bf16GradientsMatchFloat64WithinBf16Rounding) {
  const GradCase c = GetParam();
  const ModelConfig cfg = tiny(c);
  const int B = 2;
  auto be64 = make_cpu_backend<double>();
  auto be16 = make_cpu_backend<bf16>();
  Transformer<double> m64(*be64, cfg, B);
  Transformer<bf16> m16(*be16, cfg, B);
  set_router_state(m64);
  set_router_state(m16);
  Parameters<double>& p64 = m64.params();
  Parameters<bf16>& p16 = m16.params();
  std::mt19937 rng(7);
  std::normal_distribution<double> normal(0.0, 0.3);
  for (const auto& t : p64.tensors)
    for (size_t i = 0; i < t.numel; ++i) {
      const bf16 w = bf16((t.is_norm ? 1.0 : 0.0) + normal(rng));
      p16.values.data()[t.offset + i] = w;
      p64.values.data()[t.offset + i] = double(float(w));
    }
  std::vector<int32_t> tokens(B * (cfg.seq_length + 1));
  for (auto& t : tokens) t = int32_t(rng() % cfg.vocab_size);
  const double ce_scale = 1.0 / (B * cfg.seq_length), aux_scale = 1.0;
  be64->fill(p64.grads.data(), 0.0, p64.size());
  be16->acc().fill(p16.grads.data(), 0.0f, p16.size());
  const MicroBatchLoss l64 = m64.forward_backward(tokens.data(), B, ce_scale, aux_scale);
  const MicroBatchLoss l16 = m16.forward_backward(tokens.data(), B, ce_scale, aux_scale);
  // A near-tie of the router resolved the other way is no rounding error.
  ASSERT_EQ(m16.expert_load().hash, m64.expert_load().hash) << "the precisions route differently";

  const double u = 0x1p-8, R = stored_per_layer(cfg) * cfg.num_layers + 6;
  EXPECT_NEAR(l16.ce_sum, l64.ce_sum, R * u * std::abs(l64.ce_sum));
  for (const auto& t : p64.tensors) {
    std::vector<double> errors;
    double largest = 0.0;
    for (size_t i = 0; i < t.numel; ++i) {
      const double g64 = p64.grads.data()[t.offset + i], g16 = p16.grads.data()[t.offset + i];
      errors.push_back(std::abs(g16 - g64));
      largest = std::max(largest, std::abs(g64));
    }
    ASSERT_GT(largest, 0.0) << t.name;
    std::sort(errors.begin(), errors.end());
    EXPECT_LE(errors.back(), R * u * largest) << t.name << " (largest error)";
    EXPECT_LE(errors[errors.size() / 2], 2 * std::sqrt(R) * u * largest) << t.name << " (median error)";
  }

  // Gradients accumulate in float32: 15 more passes over the same tokens
  // give 16 times the first pass's gradients within float32 rounding of the
  // sum (bf16 accumulation would be off by 2^-8 of them).
  const std::vector<float> once(p16.grads.data(), p16.grads.data() + p16.size());
  for (int pass = 1; pass < 16; ++pass) m16.forward_backward(tokens.data(), B, ce_scale, aux_scale);
  for (const auto& t : p16.tensors)
    for (size_t i = 0; i < t.numel; ++i) {
      const double g = once[t.offset + i];
      ASSERT_NEAR(p16.grads.data()[t.offset + i], 16 * g, 16 * 16 * epsilon_of<float>() * std::abs(g))
          << t.name << "[" << i << "] after 16 passes";
    }
}

INSTANTIATE_TEST_SUITE_P(
    Model, GradCheck,
    ::testing::Values(GradCase{"moe_mqa_top2", 1, 4, 2, 0.0}, GradCase{"moe_gqa_top2_zloss", 2, 4, 2, 0.0, 0.1},
                      GradCase{"moe_mha_capacity_zloss", 4, 4, 2, 0.75, 0.1},
                      GradCase{"moe_top1", 1, 3, 1, 0.0}, GradCase{"dense_mqa", 1, 1, 1, 0.0},
                      GradCase{"dense_gqa", 2, 1, 1, 0.0},
                      // Heads of 6 on a width of 16, each head's query and key normalised.
                      GradCase{"moe_gqa_kv_channels_qk_norm", 2, 4, 2, 0.0, 0.0,
                               [](ModelConfig& m) {
                                 m.kv_channels = 6;
                                 m.qk_layernorm = true;
                               }},
                      GradCase{"dense_mqa_qk_norm", 1, 1, 1, 0.0, 0.0,
                               [](ModelConfig& m) { m.qk_layernorm = true; }},
                      GradCase{"dense_swiglu", 1, 1, 1, 0.0, 0.0, [](ModelConfig& m) { m.swiglu = true; }},
                      // Narrow SwiGLU experts (F 8) beside a gated shared expert, the
                      // first layer dense (F 24): DeepSeek's and Qwen2-MoE's layers.
                      GradCase{"moe_swiglu_shared_gate_first_dense", 1, 4, 2, 0.0, 0.0,
                               [](ModelConfig& m) {
                                 m.swiglu = true;
                                 m.moe_ffn_hidden_size = 8;
                                 m.moe_layers = {0, 1};
                                 m.shared_expert_size = 12;
                                 m.shared_expert_gate = true;
                               }},
                      GradCase{"moe_gelu_shared_capacity", 2, 4, 2, 0.75, 0.0,
                               [](ModelConfig& m) { m.shared_expert_size = 12; }},
                      // DeepSeek-V3's router: sigmoid scores with an expert bias, two
                      // groups of which a token takes one, weights scaled by 2.5,
                      // the load-balancing loss per sequence.
                      GradCase{"moe_sigmoid_bias_groups_seq_aux", 1, 4, 2, 0.0, 0.0,
                               [](ModelConfig& m) {
                                 m.router_score_function = "sigmoid";
                                 m.expert_bias = true;
                                 m.router_num_groups = 2;
                                 m.router_group_topk = 1;
                                 m.router_topk_scaling_factor = 2.5;
                                 m.load_balancing_type = "seq_aux_loss";
                               }},
                      GradCase{"moe_sigmoid_top1_global_aux_zloss", 2, 4, 1, 0.0, 0.1,
                               [](ModelConfig& m) {
                                 m.router_score_function = "sigmoid";
                                 m.load_balancing_type = "global_aux_loss";
                               }},
                      GradCase{"moe_pre_softmax_capacity", 2, 4, 2, 0.75, 0.0,
                               [](ModelConfig& m) { m.router_pre_softmax = true; }},
                      GradCase{"moe_no_balancing_scaled", 1, 4, 2, 0.0, 0.0,
                               [](ModelConfig& m) {
                                 m.load_balancing_type = "none";
                                 m.router_topk_scaling_factor = 2.0;
                               }}),
    [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace mt
