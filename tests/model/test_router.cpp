// route_tokens on hand-made probability tables (docs/design.md section 3): top-K
// with ties to the lower expert index, weights renormalised over the top-K,
// f_e / P_e / aux by hand, capacity ceil(c*K*T/E) in double, drops in token
// order whatever the slot, no renormalisation after drops, packing by expert
// then token order.
#include "model/router.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <type_traits>
#include <vector>

namespace mt {
namespace {

template <typename T>
class RoutingTyped : public ::testing::Test {};
using Types = ::testing::Types<float, double>;
TYPED_TEST_SUITE(RoutingTyped, Types);

template <typename T>
double tol() {
  return std::is_same_v<T, float> ? 1e-6 : 1e-14;
}

TYPED_TEST(RoutingTyped, Top2SelectionTiesWeightsAndAux) {
  using T = TypeParam;
  const int Tn = 4, E = 4, K = 2;
  const std::vector<T> probs = {
      T(0.1),  T(0.4),  T(0.2),  T(0.3),   // t0 -> e1, e3
      T(0.25), T(0.25), T(0.25), T(0.25),  // t1: all equal -> e0, e1
      T(0.5),  T(0.1),  T(0.1),  T(0.3),   // t2 -> e0, e3
      T(0.1),  T(0.3),  T(0.3),  T(0.3),   // t3: three-way tie -> e1, e2
  };
  const double alpha = 0.01;
  Routing r = route_tokens(probs.data(), Tn, {.experts = E, .topk = K, .capacity_factor = 0.0, .aux_coeff = alpha});
  EXPECT_EQ(r.tokens, Tn);
  EXPECT_EQ(r.experts, E);
  EXPECT_EQ(r.topk, K);
  EXPECT_EQ(r.expert, (std::vector<int32_t>{1, 3, 0, 1, 0, 3, 1, 2}));

  auto P = [&](int t, int e) { return double(probs[t * E + e]); };
  const std::vector<double> sums = {P(0, 1) + P(0, 3), P(1, 0) + P(1, 1), P(2, 0) + P(2, 3),
                                    P(3, 1) + P(3, 2)};
  ASSERT_EQ(r.topk_sum.size(), size_t(Tn));
  for (int t = 0; t < Tn; ++t) EXPECT_NEAR(r.topk_sum[t], sums[t], 1e-15) << t;
  const std::vector<double> w = {P(0, 1) / sums[0], P(0, 3) / sums[0], 0.5, 0.5,
                                 P(2, 0) / sums[2], P(2, 3) / sums[2], 0.5, 0.5};
  ASSERT_EQ(r.weight.size(), w.size());
  for (size_t s = 0; s < w.size(); ++s) EXPECT_NEAR(r.weight[s], w[s], 1e-15) << s;
  for (int t = 0; t < Tn; ++t) EXPECT_NEAR(r.weight[2 * t] + r.weight[2 * t + 1], 1.0, 1e-15);

  // f_e: e0 chosen by t1,t2; e1 by t0,t1,t3; e2 by t3; e3 by t0,t2 (of 8 choices).
  const std::vector<double> f = {2 / 8.0, 3 / 8.0, 1 / 8.0, 2 / 8.0};
  std::vector<double> Pe(E, 0.0);
  for (int e = 0; e < E; ++e) {
    for (int t = 0; t < Tn; ++t) Pe[e] += P(t, e);
    Pe[e] /= Tn;
  }
  EXPECT_NEAR(Pe[0], 0.2375, tol<T>());  // (0.1 + 0.25 + 0.5 + 0.1) / 4
  EXPECT_NEAR(Pe[3], 0.2875, tol<T>());  // (0.3 + 0.25 + 0.3 + 0.3) / 4
  double aux = 0.0;
  for (int e = 0; e < E; ++e) {
    EXPECT_NEAR(r.choice_share[e], f[e], 1e-15) << e;
    EXPECT_NEAR(r.mean_prob[e], Pe[e], 1e-15) << e;
    aux += f[e] * Pe[e];
  }
  EXPECT_NEAR(r.aux_loss, alpha * E * aux, 1e-15);
  EXPECT_NEAR(r.aux_loss, 0.01025, tol<T>());  // 0.01 * 4 * 8.2 / 32

  // c = 0: nothing dropped, packing by expert then token order.
  EXPECT_EQ(r.capacity, Tn * K);
  EXPECT_EQ(r.dropped, 0);
  EXPECT_EQ(r.kept, (std::vector<uint8_t>(Tn * K, 1)));
  EXPECT_EQ(r.expert_offset, (std::vector<int32_t>{0, 2, 5, 6, 8}));
  EXPECT_EQ(r.packed_slot, (std::vector<int32_t>{2, 4, 0, 3, 6, 7, 1, 5}));
}

TYPED_TEST(RoutingTyped, RandomTablesTakeTheTrueTopK) {
  using T = TypeParam;
  const int Tn = 20, E = 8, K = 3;
  std::mt19937 rng(3);
  std::uniform_int_distribution<int> level(1, 6);  // coarse levels: many ties
  std::vector<T> probs(Tn * E);
  for (int t = 0; t < Tn; ++t) {
    double s = 0.0;
    for (int e = 0; e < E; ++e) s += (probs[t * E + e] = T(level(rng)));
    for (int e = 0; e < E; ++e) probs[t * E + e] = T(probs[t * E + e] / s);
  }
  Routing r = route_tokens(probs.data(), Tn, {.experts = E, .topk = K, .capacity_factor = 0.0, .aux_coeff = 1.0});
  for (int t = 0; t < Tn; ++t) {
    const T* p = probs.data() + t * E;
    // Reference: stable sort of expert indices by descending p.
    std::vector<int> order(E);
    for (int e = 0; e < E; ++e) order[e] = e;
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return p[a] > p[b]; });
    double wsum = 0.0;
    for (int k = 0; k < K; ++k) {
      EXPECT_EQ(r.expert[t * K + k], order[k]) << "token " << t << " slot " << k;
      wsum += r.weight[t * K + k];
    }
    EXPECT_NEAR(wsum, 1.0, 1e-14);
  }
}

TEST(Routing, ExpertCapacityInDouble) {
  // ceil(c * K * T / E); argument order is (c, tokens, experts, topk).
  EXPECT_EQ(expert_capacity(1.1, 10, 4, 2), 6);  // ceil(5.5)
  // 1.2 * 2 * 25 / 4 is 15 in double but 15.000001 in float (ceil 16).
  EXPECT_EQ(expert_capacity(1.2, 25, 4, 2), 15);
  EXPECT_EQ(expert_capacity(1.2, 25, 6, 1), 5);   // float: 5.0000005 -> 6
  EXPECT_EQ(expert_capacity(1.0, 5, 4, 2), 3);    // ceil(2.5)
  EXPECT_EQ(expert_capacity(1.0, 8, 4, 2), 4);    // exact
  EXPECT_EQ(expert_capacity(2.0, 3, 8, 1), 1);    // ceil(0.75)
  EXPECT_EQ(expert_capacity(0.0, 10, 4, 2), 20);  // no limit: T * K
  Routing r = route_tokens(std::vector<double>(25 * 4, 0.25).data(), 25,
                           {.experts = 4, .topk = 2, .capacity_factor = 1.2, .aux_coeff = 0.0});
  EXPECT_EQ(r.capacity, 15);
}

TYPED_TEST(RoutingTyped, CapacityDropsLaterTokensWhateverTheirSlot) {
  using T = TypeParam;
  // E=3, K=2, T=2, c=0.5: capacity ceil(0.5 * 2 * 2 / 3) = 1.
  // Token 0's second choice and token 1's first choice both want expert 2:
  // token order wins, so token 1's first choice is the one dropped.
  const std::vector<T> probs = {
      T(0.5), T(0.1), T(0.4),  // t0 -> e0, e2
      T(0.1), T(0.3), T(0.6),  // t1 -> e2, e1
  };
  Routing r = route_tokens(probs.data(), 2, {.experts = 3, .topk = 2, .capacity_factor = 0.5, .aux_coeff = 0.1});
  EXPECT_EQ(r.capacity, 1);
  EXPECT_EQ(r.expert, (std::vector<int32_t>{0, 2, 2, 1}));
  EXPECT_EQ(r.kept, (std::vector<uint8_t>{1, 1, 0, 1}));
  EXPECT_EQ(r.dropped, 1);
  // No renormalisation after the drop: token 1 keeps 0.3 / 0.9 on expert 1.
  EXPECT_NEAR(r.weight[3], double(T(0.3)) / (double(T(0.6)) + double(T(0.3))), 1e-15);
  EXPECT_NEAR(r.weight[3], 1.0 / 3.0, tol<T>());
  EXPECT_NEAR(r.weight[2], 2.0 / 3.0, tol<T>());  // the dropped one keeps its weight too
  EXPECT_EQ(r.expert_offset, (std::vector<int32_t>{0, 1, 2, 3}));
  EXPECT_EQ(r.packed_slot, (std::vector<int32_t>{0, 3, 1}));
  // f_e counts the choices before drops.
  EXPECT_NEAR(r.choice_share[0], 0.25, 1e-15);
  EXPECT_NEAR(r.choice_share[1], 0.25, 1e-15);
  EXPECT_NEAR(r.choice_share[2], 0.5, 1e-15);
  double aux = 0.0;
  for (int e = 0; e < 3; ++e) aux += r.choice_share[e] * (double(probs[e]) + double(probs[3 + e])) / 2;
  EXPECT_NEAR(r.aux_loss, 0.1 * 3 * aux, 1e-15);
}

TEST(Routing, CapacityKeepsTheFirstTokensOfAnOverloadedExpert) {
  // E=2, K=1, T=6, c=1: capacity 3; every token wants expert 0.
  std::vector<double> probs;
  for (int t = 0; t < 6; ++t) probs.insert(probs.end(), {0.6 + 0.05 * t, 0.4 - 0.05 * t});
  Routing r = route_tokens(probs.data(), 6, {.experts = 2, .topk = 1, .capacity_factor = 1.0, .aux_coeff = 0.0});
  EXPECT_EQ(r.capacity, 3);
  EXPECT_EQ(r.dropped, 3);
  EXPECT_EQ(r.kept, (std::vector<uint8_t>{1, 1, 1, 0, 0, 0}));
  EXPECT_EQ(r.expert_offset, (std::vector<int32_t>{0, 3, 3}));
  EXPECT_EQ(r.packed_slot, (std::vector<int32_t>{0, 1, 2}));
  for (double w : r.weight) EXPECT_EQ(w, 1.0);  // K = 1: weight p / p
}

TEST(Routing, PackingIsByExpertThenTokenWithDrops) {
  // E=3, K=2, T=4, c=0.75: capacity ceil(0.75 * 2 * 4 / 3) = 2.
  const std::vector<double> probs = {
      0.6, 0.3, 0.1,  // t0 -> e0, e1
      0.2, 0.5, 0.3,  // t1 -> e1, e2
      0.7, 0.1, 0.2,  // t2 -> e0, e2
      0.3, 0.6, 0.1,  // t3 -> e1 (dropped: e1 has t0, t1), e0 (dropped: e0 has t0, t2)
  };
  Routing r = route_tokens(probs.data(), 4, {.experts = 3, .topk = 2, .capacity_factor = 0.75, .aux_coeff = 0.0});
  EXPECT_EQ(r.capacity, 2);
  EXPECT_EQ(r.expert, (std::vector<int32_t>{0, 1, 1, 2, 0, 2, 1, 0}));
  EXPECT_EQ(r.kept, (std::vector<uint8_t>{1, 1, 1, 1, 1, 1, 0, 0}));
  EXPECT_EQ(r.dropped, 2);
  EXPECT_EQ(r.expert_offset, (std::vector<int32_t>{0, 2, 4, 6}));
  EXPECT_EQ(r.packed_slot, (std::vector<int32_t>{0, 4, 1, 2, 3, 5}));
  // Same table without a limit: all kept, e0 gets t0, t2, t3.
  Routing u = route_tokens(probs.data(), 4, {.experts = 3, .topk = 2, .capacity_factor = 0.0, .aux_coeff = 0.0});
  EXPECT_EQ(u.dropped, 0);
  EXPECT_EQ(u.expert_offset, (std::vector<int32_t>{0, 3, 6, 8}));
  EXPECT_EQ(u.packed_slot, (std::vector<int32_t>{0, 4, 7, 1, 2, 6, 3, 5}));
}

// Sigmoid scores (Megatron's topk_routing_with_score_function): the
// weights are the chosen scores over their sum plus 1e-20, times the
// scaling factor; a single pick keeps its score as it is.
TEST(Routing, SigmoidWeightsRenormaliseOverTheChosenAndScale) {
  const std::vector<double> s = {0.9, 0.2, 0.6, 0.4,  // t0 -> e0, e2
                                 0.1, 0.8, 0.3, 0.7};  // t1 -> e1, e3
  const Routing r =
      route_tokens(s.data(), 2, {.experts = 4, .topk = 2, .sigmoid = true, .scaling = 2.5, .aux_coeff = 0.0});
  EXPECT_EQ(r.expert, (std::vector<int32_t>{0, 2, 1, 3}));
  EXPECT_DOUBLE_EQ(r.topk_sum[0], 0.9 + 0.6 + 1e-20);
  EXPECT_DOUBLE_EQ(r.weight[0], 2.5 * 0.9 / (0.9 + 0.6 + 1e-20));
  EXPECT_DOUBLE_EQ(r.weight[3], 2.5 * 0.7 / (0.8 + 0.7 + 1e-20));
  const Routing one = route_tokens(s.data(), 2, {.experts = 4, .topk = 1, .sigmoid = true, .aux_coeff = 0.0});
  EXPECT_EQ(one.topk_sum[0], 0.0);  // not renormalised
  EXPECT_EQ(one.weight, (std::vector<double>{0.9, 0.8}));
}

// --moe-router-pre-softmax: the softmax's own probabilities weigh the
// chosen experts; they do not sum to 1.
TEST(Routing, PreSoftmaxWeightsAreTheProbabilities) {
  const std::vector<double> p = {0.5, 0.3, 0.2};
  const Routing r = route_tokens(p.data(), 1, {.experts = 3, .topk = 2, .pre_softmax = true, .aux_coeff = 0.0});
  EXPECT_EQ(r.expert, (std::vector<int32_t>{0, 1}));
  EXPECT_EQ(r.weight, (std::vector<double>{0.5, 0.3}));
  EXPECT_EQ(r.topk_sum[0], 0.0);
}

// The expert bias picks the experts; the weights stay those of the
// unbiased scores (arXiv 2408.15664).
TEST(Routing, ExpertBiasChoosesButDoesNotWeigh) {
  const std::vector<double> s = {0.9, 0.5, 0.45, 0.1};
  const std::vector<float> bias = {-0.5f, 0.0f, 0.1f, 0.0f};  // selection scores 0.4, 0.5, 0.55, 0.1
  const Routing r = route_tokens(s.data(), 1,
                                 {.experts = 4, .topk = 2, .sigmoid = true, .aux_coeff = 0.0, .bias = bias.data()});
  EXPECT_EQ(r.expert, (std::vector<int32_t>{2, 1}));
  EXPECT_DOUBLE_EQ(r.weight[0], 0.45 / (0.45 + 0.5 + 1e-20));
  EXPECT_DOUBLE_EQ(r.weight[1], 0.5 / (0.45 + 0.5 + 1e-20));
}

// Group-limited routing (Megatron's group_limited_topk): experts in groups
// of 2, each group scored by the sum of its best K / group-top-k sigmoid
// scores; the token picks among the best group-top-k groups only.
TEST(Routing, GroupLimitedRoutingPicksWithinTheBestGroups) {
  //                          group 0      group 1      group 2
  const std::vector<double> s = {0.30, 0.29, 0.10, 0.50, 0.05, 0.40};
  // K 4 of 2 groups: groups scored by their best two, 0.59, 0.60, 0.45, so
  // groups 0 and 1; e5 (0.40) is left out though it outscores three picks.
  const Routing two = route_tokens(
      s.data(), 1, {.experts = 6, .topk = 4, .sigmoid = true, .groups = 3, .group_topk = 2, .aux_coeff = 0.0});
  EXPECT_EQ(two.expert, (std::vector<int32_t>{3, 0, 1, 2}));
  const Routing free = route_tokens(s.data(), 1, {.experts = 6, .topk = 4, .sigmoid = true, .aux_coeff = 0.0});
  EXPECT_EQ(free.expert, (std::vector<int32_t>{3, 5, 0, 1}));
  // K 2 of 1 group: group 1 (0.60) alone.
  const Routing one = route_tokens(
      s.data(), 1, {.experts = 6, .topk = 2, .sigmoid = true, .groups = 3, .group_topk = 1, .aux_coeff = 0.0});
  EXPECT_EQ(one.expert, (std::vector<int32_t>{3, 2}));
}

// Softmax routing that renormalises over the K ranks the groups by their
// logits, as Megatron's top-K of the logits does; the probabilities' sums
// would rank them the other way (the exponential favours one large logit).
TEST(Routing, SoftmaxGroupsAreRankedOnTheLogits) {
  //                               group 0     group 1
  const std::vector<double> logits = {1.0, 1.0, 2.5, -2.0};
  std::vector<double> p(4);
  double sum = 0.0;
  for (size_t e = 0; e < 4; ++e) sum += p[e] = std::exp(logits[e]);
  for (double& x : p) x /= sum;
  ASSERT_GT(p[2] + p[3], p[0] + p[1]);  // the probabilities favour group 1
  const RouteOptions o{.experts = 4, .topk = 2, .groups = 2, .group_topk = 1, .aux_coeff = 0.0};
  const Routing r = route_tokens(p.data(), 1, o, nullptr, logits.data());
  EXPECT_EQ(r.expert, (std::vector<int32_t>{0, 1}));  // logit sums 2.0 against 0.5
  // With pre_softmax the scores rank the groups, as in Megatron.
  RouteOptions pre = o;
  pre.pre_softmax = true;
  EXPECT_EQ(route_tokens(p.data(), 1, pre).expert, (std::vector<int32_t>{2, 3}));
}

// The load-balancing loss per sequence (DeepSeek's, Megatron's
// seq_aux_loss): f and P of each sequence, the losses averaged; against
// the micro-batch's, which mixes the sequences' loads.
TEST(Routing, SequenceAuxLossAveragesEachSequencesOwn) {
  // Two sequences of two tokens, E = 2, K = 1: sequence 0 sends both
  // tokens to e0, sequence 1 both to e1.
  const std::vector<double> p = {0.8, 0.2, 0.6, 0.4, 0.3, 0.7, 0.1, 0.9};
  const double alpha = 0.5;
  const Routing seq = route_tokens(p.data(), 4,
                                   {.experts = 2, .topk = 1, .balancing = LoadBalancing::SeqAuxLoss,
                                    .aux_coeff = alpha, .sequence = 2});
  const double seq0 = 1.0 * (0.8 + 0.6) / 2, seq1 = 1.0 * (0.7 + 0.9) / 2;
  EXPECT_DOUBLE_EQ(seq.aux_loss, alpha * 2 * (seq0 + seq1) / 2);
  ASSERT_EQ(seq.choice_share.size(), 4u);
  EXPECT_EQ(seq.choice_share, (std::vector<double>{1, 0, 0, 1}));
  const Routing batch = route_tokens(p.data(), 4, {.experts = 2, .topk = 1, .aux_coeff = alpha});
  EXPECT_DOUBLE_EQ(batch.aux_loss, alpha * 2 * (0.5 * (0.8 + 0.6 + 0.3 + 0.1) / 4 + 0.5 * (0.2 + 0.4 + 0.7 + 0.9) / 4));
  const Routing none =
      route_tokens(p.data(), 4, {.experts = 2, .topk = 1, .balancing = LoadBalancing::None, .aux_coeff = alpha});
  EXPECT_EQ(none.aux_loss, 0.0);
}

// global_aux_loss: the shares f_e of the last global batch, when there
// are, with the micro-batch's mean scores; sigmoid scores enter the loss
// over their sum.
TEST(Routing, GlobalAuxLossTakesTheLastBatchsShares) {
  const std::vector<double> s = {0.9, 0.3, 0.5, 0.5};
  const std::vector<float> share = {0.25f, 0.75f};
  const Routing g = route_tokens(s.data(), 2,
                                 {.experts = 2, .topk = 1, .sigmoid = true,
                                  .balancing = LoadBalancing::GlobalAuxLoss, .aux_coeff = 1.0,
                                  .global_share = share.data()});
  const double P0 = (0.9 / (1.2 + 1e-20) + 0.5 / (1.0 + 1e-20)) / 2, P1 = 1 - P0;
  EXPECT_NEAR(g.aux_loss, 2 * (0.25 * P0 + 0.75 * P1), 1e-15);
  EXPECT_EQ(g.aux_choices, (std::vector<int64_t>{2, 0}));  // t1 ties: the lower expert
  const Routing first = route_tokens(s.data(), 2,
                                     {.experts = 2, .topk = 1, .sigmoid = true,
                                      .balancing = LoadBalancing::GlobalAuxLoss, .aux_coeff = 1.0});
  EXPECT_NEAR(first.aux_loss, 2 * (1.0 * P0 + 0.0 * P1), 1e-15);  // no last batch yet: its own
}

}  // namespace
}  // namespace mt
