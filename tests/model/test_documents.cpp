// Documents inside a sample (--reset-position-ids, --reset-attention-mask):
// a document after an end-of-document token is seen exactly as if it began
// the sample, through the whole model; without the mask it is not.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "model/transformer.h"

namespace mt {
namespace {

// Each token's loss of one sample, by a float64 model with `reset` settings.
std::vector<double> token_losses(const std::vector<int32_t>& tokens, bool reset_positions, bool reset_mask) {
  ModelConfig cfg{.vocab_size = 32, .hidden_size = 16, .num_layers = 2, .num_heads = 4, .num_query_groups = 2,
                  .ffn_hidden_size = 24, .num_experts = 4, .router_topk = 2, .seq_length = int(tokens.size()) - 1};
  cfg.reset_position_ids = reset_positions;
  cfg.reset_attention_mask = reset_mask;
  cfg.eod_token = 31;
  auto be = make_cpu_backend<double>();
  Transformer<double> model(*be, cfg, 1);
  model.params().initialise(*be, 1234);
  // Larger weights than the init's, so that every path's effect is visible.
  std::mt19937 rng(5);
  std::normal_distribution<double> normal(0.0, 0.3);
  for (size_t i = 0; i < model.params().size(); ++i) model.params().values.data()[i] += normal(rng);
  model.forward(tokens.data(), 1);
  std::vector<double> losses(cfg.seq_length);
  be->to_host(losses.data(), model.token_losses(0), losses.size());
  return losses;
}

TEST(Documents, ADocumentAfterAnEndOfDocumentIsSeenAsIfItBeganTheSample) {
  // X: document A (4 tokens and the end of document), then document B;
  // Y: document B from the start, then other tokens. S = 12.
  const std::vector<int32_t> a = {3, 9, 4, 17, 31}, b = {5, 12, 8, 8, 20, 1, 7, 26};
  std::vector<int32_t> x = a, y = b;
  x.insert(x.end(), b.begin(), b.end());
  for (int32_t t : {2, 11, 6, 14, 19}) y.push_back(t);
  ASSERT_EQ(x.size(), y.size());
  // B's tokens predict B's next ones at inputs 5..11 of X and 0..6 of Y.
  auto b_losses = [&](const std::vector<double>& losses, size_t first) {
    return std::vector<double>(losses.begin() + long(first), losses.begin() + long(first) + long(b.size()) - 1);
  };
  const std::vector<double> in_x = b_losses(token_losses(x, true, true), a.size());
  const std::vector<double> alone = b_losses(token_losses(y, true, true), 0);
  // The same sums in another order: float64 rounding of values near 1.
  for (size_t i = 0; i < alone.size(); ++i) EXPECT_NEAR(in_x[i], alone[i], 1e-12) << "token " << i;
  // Rotary embeddings depend on positions only through their differences, so
  // the mask alone isolates B as well; without the mask B attends to A.
  const std::vector<double> masked_only = b_losses(token_losses(x, false, true), a.size());
  for (size_t i = 0; i < alone.size(); ++i) EXPECT_NEAR(masked_only[i], alone[i], 1e-12) << "token " << i;
  auto largest_difference = [](const std::vector<double>& u, const std::vector<double>& v) {
    double largest = 0.0;
    for (size_t i = 0; i < u.size(); ++i) largest = std::max(largest, std::abs(u[i] - v[i]));
    return largest;
  };
  const std::vector<double> unmasked = b_losses(token_losses(x, false, false), a.size());
  const std::vector<double> reset_unmasked = b_losses(token_losses(x, true, false), a.size());
  EXPECT_GT(largest_difference(unmasked, alone), 1e-6);
  EXPECT_GT(largest_difference(reset_unmasked, alone), 1e-6);
  // Resetting positions changes what B sees of A.
  EXPECT_GT(largest_difference(reset_unmasked, unmasked), 1e-6);
}

}  // namespace
}  // namespace mt
