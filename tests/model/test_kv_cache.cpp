// Generation's key/value cache (model/kv_cache.h, Transformer::decode_stage)
// in float64: a step's rows through the cache give the logits the full
// forward pass over their sequence gives at their positions, with sequences
// at different positions sharing the cache and joining it mid-way, grouped
// query heads, and an expert capacity that drops tokens; and the same for a
// DeepSeek-style model (a dense first layer, a shared expert, sigmoid routing
// over expert groups with a bias and the per-sequence loss, gated MLPs,
// normalised queries and keys of their own head size).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include "model/transformer.h"
#include "moe_designs.h"

namespace mt {
namespace {

class KvCacheTest : public ::testing::TestWithParam<bool> {
 protected:
  static constexpr int S = 20;
  KvCacheTest() {
    cfg_ = ModelConfig{.vocab_size = 32, .hidden_size = 16, .num_layers = 2, .num_heads = 4, .num_query_groups = 2,
                       .ffn_hidden_size = 24, .num_experts = 4, .router_topk = 2, .seq_length = S,
                       .capacity_factor = 0.5};
    const bool deepseek = GetParam();
    if (deepseek) {
      cfg_.num_layers = 3;
      cfg_.moe_layers = {0, 1, 1};
      cfg_.swiglu = cfg_.qk_layernorm = true;
      cfg_.kv_channels = 6;
      cfg_.moe_ffn_hidden_size = 8;
      cfg_.shared_expert_size = 12;
      test_util::deepseek_routing(cfg_);
      cfg_.validate();
    }
    model_ = std::make_unique<Transformer<double>>(*be_, cfg_, 2);
    model_->params().initialise(*be_, 1234);
    // Larger weights than the init's, so that every path's effect is visible.
    std::mt19937 rng(5);
    std::normal_distribution<double> normal(0.0, 0.3);
    for (size_t i = 0; i < model_->params().size(); ++i) model_->params().values.data()[i] += normal(rng);
    for (RouterState& r : model_->router_state())
      for (float& b : r.expert_bias) b = float(normal(rng));
    std::uniform_int_distribution<int32_t> token(0, cfg_.vocab_size - 1);
    for (auto* seq : {&a_, &b_}) {
      seq->resize(S + 1);
      for (int32_t& t : *seq) t = token(rng);
    }
  }
  // The logits of the full forward pass over one sequence, [S, V].
  std::vector<double> full_logits(const std::vector<int32_t>& tokens) {
    model_->forward(tokens.data(), 1);
    std::vector<double> logits(size_t(S) * cfg_.vocab_size);
    be_->to_host(logits.data(), model_->logits(0), logits.size());
    return logits;
  }
  // One decode step; each row's logits against `full` of its sequence.
  void expect_step_matches(KvCache<double>& cache, const DecodeRows& rows,
                           const std::vector<const std::vector<double>*>& full_of_slot) {
    model_->decode_stage(rows, cache);
    const size_t V = size_t(cfg_.vocab_size);
    std::vector<double> got(size_t(rows.size()) * V);
    be_->to_host(got.data(), model_->logits(0), got.size());
    for (int i = 0; i < rows.size(); ++i) {
      const std::vector<double>& full = *full_of_slot.at(size_t(rows.sequence[size_t(i)]));
      const size_t p = size_t(rows.position[size_t(i)]);
      // The same products summed in other orders: float64 rounding of
      // values of a few units, through two layers.
      for (size_t v = 0; v < V; ++v)
        ASSERT_NEAR(got[size_t(i) * V + v], full[p * V + v], 1e-11 * std::max(1.0, std::abs(full[p * V + v])))
            << "sequence slot " << rows.sequence[size_t(i)] << " position " << p << " logit " << v;
    }
  }

  ModelConfig cfg_;
  std::unique_ptr<Backend<double>> be_ = make_cpu_backend<double>();
  std::unique_ptr<Transformer<double>> model_;
  std::vector<int32_t> a_, b_;  // two sequences, [S + 1]
};

TEST_P(KvCacheTest, StepsThroughTheCacheGiveTheLogitsOfTheFullPass) {
  model_->expert_load().clear();
  const std::vector<double> full_a = full_logits(a_), full_b = full_logits(b_);
  const ExpertLoad& load = model_->expert_load();
  ASSERT_GT(std::accumulate(load.dropped.begin(), load.dropped.end(), int64_t(0)), 0)
      << "the capacity drops nothing: the test would not see it";

  // A in slot 2 of three, B in slot 0; slot 1 stays empty.
  KvCache<double> cache = model_->make_kv_cache(3);
  const std::vector<const std::vector<double>*> full_of_slot = {&full_b, nullptr, &full_a};
  cache.start(2);
  DecodeRows prompt;  // A's first 7 tokens at once
  for (int p = 0; p < 7; ++p) prompt.add(a_[size_t(p)], 2, p);
  expect_step_matches(cache, prompt, full_of_slot);
  cache.start(0);
  DecodeRows joined;  // A's next token, and B's first 4 joining
  joined.add(a_[7], 2, 7);
  for (int p = 0; p < 4; ++p) joined.add(b_[size_t(p)], 0, p);
  expect_step_matches(cache, joined, full_of_slot);
  for (int pa = 8, pb = 4; pa < S || pb < S; ++pa, ++pb) {  // a token each until both end
    DecodeRows step;
    if (pb < S) step.add(b_[size_t(pb)], 0, pb);
    if (pa < S) step.add(a_[size_t(pa)], 2, pa);
    expect_step_matches(cache, step, full_of_slot);
  }
  // Slot 2 taken again by B, all at once: nothing of A's routing remains.
  cache.start(2);
  DecodeRows again;
  for (int p = 0; p < S; ++p) again.add(b_[size_t(p)], 2, p);
  expect_step_matches(cache, again, {nullptr, nullptr, &full_b});
}

TEST_P(KvCacheTest, AStepHoldsAtMostTheModelsRows) {
  KvCache<double> cache = model_->make_kv_cache(2);
  DecodeRows rows;
  for (int i = 0; i < 2 * S + 1; ++i) rows.add(0, i % 2, i / 2 % S);
  try {
    model_->decode_stage(rows, cache);
    FAIL() << "a step of " << rows.size() << " rows ran";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("a generation step of 41 rows, the model takes 1 to 40"), std::string::npos)
        << e.what();
  }
}

INSTANTIATE_TEST_SUITE_P(Designs, KvCacheTest, ::testing::Bool(),
                         [](const auto& info) { return std::string(info.param ? "deepseek" : "megatron"); });

}  // namespace
}  // namespace mt
