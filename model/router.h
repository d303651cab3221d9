// The router of an MoE layer (docs/design.md section 3.3), forward and
// backward side by side, as Megatron's router defines it: scores s =
// softmax(m router^T) or sigmoid(m router^T); the experts a token picks,
// top-K of the scores (plus the expert bias of aux-loss-free balancing,
// within the best groups under group-limited routing); their weights (the
// scores renormalised over the K, or with --moe-router-pre-softmax the
// softmax itself, times the scaling factor); the experts' capacity; the
// load-balancing loss (per micro-batch, per sequence, or with the last
// global batch's shares) and the router z-loss; and the kept assignments
// as rows (token, weight) grouped by expert, which the dispatcher moves.
// Top-K and capacity run on the host: they are O(T E) and decide the
// shapes of the expert products. Scores, weights and losses are Acc
// (float32 under bf16); the router is whole on every TP rank, so every TP
// rank routes alike.
#pragma once

#include <cstdint>
#include <vector>

#include "model/config.h"
#include "parallel/expert_dispatch.h"
#include "runtime/backend.h"

namespace mt {

enum class LoadBalancing { AuxLoss, SeqAuxLoss, GlobalAuxLoss, None };

// How a micro-batch's tokens are routed: the model's routing flags and the
// layer's state between steps (RouterState).
struct RouteOptions {
  int experts = 1, topk = 1;
  double capacity_factor = 0.0;  // 0: no limit
  bool sigmoid = false;          // the scores are sigmoid(logits), else softmax(logits)
  bool pre_softmax = false;      // softmax: the weights are the scores, not renormalised over the top K
  double scaling = 0.0;          // the weights times this; 0: none
  int groups = 0, group_topk = 0;  // group-limited routing; 0: none
  LoadBalancing balancing = LoadBalancing::AuxLoss;
  double aux_coeff = 0.0;   // alpha
  int sequence = 0;         // seq_aux_loss: the tokens of one sequence
  const float* bias = nullptr;          // [E] added to the scores to choose experts, never to the weights
  const float* global_share = nullptr;  // [E] global_aux_loss: f_e of the last global batch; null: none yet
};

// The options of a model's router, without the layer's state.
RouteOptions route_options(const ModelConfig& cfg);

// Softmax routing that renormalises over the top K picks its groups by the
// logits (Megatron's top-K of the logits); the other modes by the scores.
inline bool groups_on_logits(const RouteOptions& o) { return o.groups > 0 && !o.sigmoid && !o.pre_softmax; }

// A micro-batch's routing: which expert each (token, slot) goes to, with
// what weight, which assignments the capacity drops, and the load-balancing
// loss.
struct Routing {
  int tokens = 0, experts = 0, topk = 0;
  int capacity = 0;                    // per expert; tokens * topk when unlimited
  int dropped = 0;                     // assignments over capacity
  std::vector<int32_t> expert;         // [T*K] expert of (t, k); slots best first
  std::vector<double> weight;          // [T*K] routing weights, not renormalised after drops
  std::vector<double> topk_sum;        // [T] the weights' denominator, the chosen scores' sum; 0: not renormalised
  std::vector<uint8_t> kept;           // [T*K] 1 unless dropped by capacity
  std::vector<int32_t> expert_offset;  // [E+1] kept assignments grouped by expert
  std::vector<int32_t> packed_slot;    // [kept] t*K + k, by expert then token order
  // The load-balancing loss's scores a (the softmax, or the sigmoid scores
  // over their sum, aux_norm[t]) and their top-K choices, which with groups
  // or a bias may differ from the routing's: f_e, the share of the choices
  // that picked e (before drops), and P_e, the mean of a_e, over the
  // micro-batch ([E]) or each sequence ([B, E], seq_aux_loss); f_e of the
  // last global batch under global_aux_loss.
  std::vector<double> choice_share, mean_prob;
  std::vector<double> aux_norm;      // [T] sigmoid only
  std::vector<int64_t> aux_choices;  // [E] the micro-batch's top-K choices of a
  double aux_loss = 0.0;             // alpha E sum_e f_e P_e (averaged over the sequences)
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

// scores: host [tokens, experts], the softmax or sigmoid of the router
// logits; logits: the logits themselves, needed only where
// groups_on_logits(o). sequences: generation's capacity (null: the
// micro-batch's, in token order), which routes without a balancing loss.
template <typename T>
Routing route_tokens(const T* scores, int tokens, const RouteOptions& o, const SequenceCapacity* sequences = nullptr,
                     const T* logits = nullptr);

// Capacity of one expert: ceil(c * K * T / E) in double precision; c = 0 means
// no limit.
int expert_capacity(double capacity_factor, int tokens, int experts, int topk);

// The most rows the local experts of one rank can receive from a micro-batch
// of `tokens` tokens on each of the ep ranks of its EP group: every kept
// assignment (tokens * topk) without EP; with EP, each of the E/EP local
// experts takes from each rank at most min(capacity, tokens) rows (a token
// visits an expert once), and no more than all ep * tokens * topk rows.
int64_t expert_rows_bound(double capacity_factor, int tokens, int experts, int topk, int ep);

// What routing keeps of a layer from one step to the next, outside the
// trained parameters (no gradient, no Adam moments, no weight decay):
// aux-loss-free balancing's expert bias, and global_aux_loss's shares of
// the last global batch; and the counts of this step's training passes
// that update them (Transformer::update_router_state).
struct RouterState {
  std::vector<float> expert_bias;   // [E] --moe-router-enable-expert-bias; empty without
  std::vector<float> global_share;  // [E] global_aux_loss: f_e of the last global batch; empty until set
  std::vector<int64_t> kept;        // [E] assignments the experts kept this step
  std::vector<int64_t> choices;     // [E] the load-balancing loss's choices this step
  void count(const Routing& r);
  void clear_counts();
};

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
  DeviceBuffer<Acc> probs;                // [T, E] the scores s (softmax or sigmoid)
  std::vector<Acc> host_scores;           // [T, E] the same on the host
  Routing routing;                        // host-side routing decisions
  std::vector<double> lse;                // [T] logsumexp of each token's router logits (z-loss only)
  std::vector<Acc> host_logits;           // [T, E] the logits (z-loss beside sigmoid scores; softmax groups)
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
  DeviceBuffer<Acc> dprobs;   // [T, E] of the scores
  DeviceBuffer<Acc> dlogits;  // [T, E]
  DeviceBuffer<T> dlogits_t;  // [T, E] dlogits rounded to T for the products (bf16 only)
};

// Routes m [T, d] with the router [E, d] and the layer's state: fills a
// and returns the layer's router losses (before aux_scale). sequences:
// generation's capacity (route_tokens).
template <typename T>
RouterLosses router_forward(Backend<T>& be, const ModelConfig& cfg, const RouterState& state, const T* router,
                            RouterActs<T>& a, const T* m, int tokens, const SequenceCapacity* sequences = nullptr);

// Given dweight [kept rows] = d loss / d each kept row's routing weight
// (summed over TP), accumulates the router's gradient into drouter and adds
// the router's share of the input gradient to dm (none when dm is null: a
// TP rank that leaves it to another). aux_scale multiplies the router losses.
template <typename T>
void router_backward(Backend<T>& be, const ModelConfig& cfg, const T* router, acc_t<T>* drouter, RouterActs<T>& a,
                     RouterScratch<T>& s, const T* m, const acc_t<T>* dweight, T* dm, int tokens,
                     double aux_scale);

}  // namespace mt
