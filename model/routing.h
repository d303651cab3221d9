// Top-K routing of a micro-batch's tokens to experts (docs/design.md section 3):
// which expert each (token, slot) goes to, with what weight, which
// assignments the capacity drops, and the load-balancing loss. Computed on
// the host: it is O(T * E) and decides the shapes of the expert products.
#pragma once

#include <cstdint>
#include <vector>

namespace mt {

struct Routing {
  int tokens = 0, experts = 0, topk = 0;
  int capacity = 0;                    // per expert; tokens * topk when unlimited
  int dropped = 0;                     // assignments over capacity
  std::vector<int32_t> expert;         // [T*K] expert of (t, k); slots in descending p
  std::vector<double> weight;          // [T*K] p_topk / sum(p_topk), not renormalised after drops
  std::vector<double> topk_sum;        // [T] sum of the top-K probabilities
  std::vector<uint8_t> kept;           // [T*K] 1 unless dropped by capacity
  std::vector<int32_t> expert_offset;  // [E+1] kept assignments grouped by expert
  std::vector<int32_t> packed_slot;    // [kept] t*K + k, by expert then token order
  std::vector<double> choice_share;    // [E] f_e, share of the T*K choices (before drops)
  std::vector<double> mean_prob;       // [E] P_e, mean of p_e over the T tokens
  double aux_loss = 0.0;               // alpha * E * sum_e f_e P_e
};

// Generation's capacity: each token is one of a sequence's, routed after
// that sequence's earlier tokens, and counts against its own sequence's
// kept assignments (used[t] -> [experts], updated) under `capacity`, the
// capacity of the full pass over one sequence. So a token is kept or
// dropped as it would be in the full forward pass over its sequence.
struct SequenceCapacity {
  int capacity = 0;
  std::vector<int32_t*> used;  // [tokens]
};

// probs: host [tokens, experts], softmax of the router logits. sequences:
// generation's capacity (null: the micro-batch's, in token order).
template <typename T>
Routing route_tokens(const T* probs, int tokens, int experts, int topk, double capacity_factor,
                     double aux_coeff, const SequenceCapacity* sequences = nullptr);

// Capacity of one expert: ceil(c * K * T / E) in double precision; c = 0 means
// no limit.
int expert_capacity(double capacity_factor, int tokens, int experts, int topk);

// The most rows the local experts of one rank can receive from a micro-batch
// of `tokens` tokens on each of the ep ranks of its EP group: every kept
// assignment (tokens * topk) without EP; with EP, each of the E/EP local
// experts takes from each rank at most min(capacity, tokens) rows (a token
// visits an expert once), and no more than all ep * tokens * topk rows.
int64_t expert_rows_bound(double capacity_factor, int tokens, int experts, int topk, int ep);

}  // namespace mt
