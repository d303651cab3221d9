// The router of an MoE layer (docs/design.md section 3.3), forward and
// backward side by side: the scores p = softmax(m router^T), the router
// z-loss, top-K with the experts' capacity and the load-balancing loss, and
// the kept assignments as rows (token, weight) grouped by expert, which the
// dispatcher moves to the experts. Top-K and capacity run on the host: they
// are O(T E) and decide the shapes of the expert products. Scores, weights
// and losses are Acc (float32 under bf16); the router is whole on every TP
// rank, so every TP rank routes alike.
#pragma once

#include <cstdint>
#include <vector>

#include "model/config.h"
#include "parallel/expert_dispatch.h"
#include "runtime/backend.h"

namespace mt {

// A micro-batch's routing: which expert each (token, slot) goes to, with
// what weight, which assignments the capacity drops, and the load-balancing
// loss.
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

// The router's losses of one layer and micro-batch.
struct RouterLosses {
  double aux = 0.0;  // load balancing
  double z = 0.0;    // z-loss
};

// What the forward pass keeps for the backward pass (tokens T, K slots a
// token).
template <typename T>
struct RouterActs {
  using Acc = acc_t<T>;
  RouterActs() = default;
  RouterActs(Backend<T>& be, const ModelConfig& cfg, int tokens);
  DeviceBuffer<Acc> probs;                // [T, E] softmax of the router logits
  Routing routing;                        // host-side routing decisions
  std::vector<double> lse;                // [T] logsumexp of each token's router logits (z-loss only)
  DeviceBuffer<T, int32_t> packed_token;  // [T*K] token of each kept assignment, grouped by expert
  DeviceBuffer<Acc> packed_weight;        // [T*K] its routing weight
  PackedRows<T> rows() const { return {packed_token.data(), packed_weight.data(), &routing.expert_offset}; }
};

// The backward pass's work space, shared by all layers.
template <typename T>
struct RouterScratch {
  using Acc = acc_t<T>;
  RouterScratch() = default;
  RouterScratch(Backend<T>& be, const ModelConfig& cfg, int tokens);
  DeviceBuffer<Acc> dprobs;   // [T, E]
  DeviceBuffer<Acc> dlogits;  // [T, E]
  DeviceBuffer<T> dlogits_t;  // [T, E] dlogits rounded to T for the products (bf16 only)
};

// Routes m [T, d] with the router [E, d]: fills a and returns the layer's
// router losses (before aux_scale). sequences: generation's capacity
// (route_tokens).
template <typename T>
RouterLosses router_forward(Backend<T>& be, const ModelConfig& cfg, const T* router, RouterActs<T>& a, const T* m,
                            int tokens, const SequenceCapacity* sequences = nullptr);

// Given dweight [kept rows] = d loss / d each kept row's routing weight
// (summed over TP), accumulates the router's gradient into drouter and adds
// the router's share of the input gradient to dm. aux_scale multiplies the
// router losses.
template <typename T>
void router_backward(Backend<T>& be, const ModelConfig& cfg, const T* router, acc_t<T>* drouter, RouterActs<T>& a,
                     RouterScratch<T>& s, const T* m, const acc_t<T>* dweight, T* dm, int tokens,
                     double aux_scale);

}  // namespace mt
