// How a row of logits picks its token (generation/sampling.h): greedy with
// ties to the lower id, and draws confined to the top-k tokens holding
// top-p of the probability.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "generation/sampling.h"

namespace mt {
namespace {

TEST(Sampling, GreedyTakesTheHighestLogitAndTheLowerIdOnATie) {
  const Sampling greedy{.temperature = 0};
  EXPECT_EQ(pick_token({0.5, 2.0, -1.0, 1.5}, greedy, 0.99), 1);
  EXPECT_EQ(pick_token({1.0, 3.0, 3.0, 0.0}, greedy, 0.0), 1);
}

TEST(Sampling, ADrawWalksTheSoftmaxInOrderOfLikelihood) {
  // Probabilities at temperature 1: e^0, e^-ln2, e^-ln4 over their sum,
  // 4/7, 2/7, 1/7, ranked ids 2, 0, 1.
  const std::vector<double> logits = {-std::log(2.0), -std::log(4.0), 0.0};
  const Sampling s{.temperature = 1};
  EXPECT_EQ(pick_token(logits, s, 0.0), 2);
  EXPECT_EQ(pick_token(logits, s, 0.5), 2);          // below 4/7
  EXPECT_EQ(pick_token(logits, s, 0.6), 0);          // in [4/7, 6/7)
  EXPECT_EQ(pick_token(logits, s, 0.9), 1);          // from 6/7 on
  EXPECT_EQ(pick_token(logits, {.top_k = 1}, 0.9), 2);  // top-k 1 is greedy
  // top-p 0.6 keeps the tokens whose mass first reaches 0.6: ids 2 and 0,
  // so a draw near 1 lands on the second of them.
  EXPECT_EQ(pick_token(logits, {.top_p = 0.6}, 0.99), 0);
  EXPECT_EQ(pick_token(logits, {.top_p = 0.5}, 0.99), 2);
}

}  // namespace
}  // namespace mt
