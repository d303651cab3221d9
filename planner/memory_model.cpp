#include "planner/cost_model.h"

#include <algorithm>

#include "model/router.h"
#include "model/transformer.h"

namespace mt {

namespace {

// Elements an MLP of hidden size F (this TP rank's share) keeps for `rows`
// rows (MlpActs, model/dense_mlp.h), or works in backward (MlpScratch): the
// activation's input and output, and under SwiGLU the up projection's
// output too (u, u3 and the gated product g; du, du3 and dg).
double mlp_hidden(const ModelConfig& c, double rows, double F) { return (c.swiglu ? 3.0 : 2.0) * rows * F; }

// Bytes one TP rank keeps for one layer and one micro-batch of b samples
// (T = b S tokens) between its forward and its backward, as LayerActs
// (model/transformer.h) allocates them under `keep`: the tensors of
// Korthikanti et al. (2022), section 4, for this model (no dropout,
// RMSNorm, G kv heads, K of E experts, tiled attention that keeps each
// row's log-sum-exp instead of the S x S scores). The residual stream's
// tensors (the layer's input, the norms' outputs and statistics, the
// residual after attention) have T / seq_split rows: T / TP under sequence
// parallelism, all T otherwise. Activations take `activation` bytes;
// statistics, routing weights and token indices 4. mlps: the MLPs the layer
// holds, a dense layer's or an MoE layer's (a layer full recompute rebuilds
// holds both when its stage has both kinds). Expert rows R =
// expert_rows_bound (T K without EP); under EP also the outputs of the
// rank's own T K rows, back from the all-to-all.
double layer_activation_bytes(const ModelConfig& c, const TpShape& sh, int64_t b, double activation, LayerKeep keep,
                              int ep, const LayerMlps& mlps, int seq_split) {
  const double T = double(b) * c.seq_length, Tr = T / seq_split, d = c.hidden_size, hd = c.head_dim();
  const double K = c.router_topk;
  if (keep == LayerKeep::Nothing) return 0.0;
  double values = Tr * d;  // the layer's input (the residual)
  if (keep == LayerKeep::Input) return values * activation;
  values += Tr * d                    // attn_norm's output
            + T * hd * sh.heads       // q
            + 2 * T * hd * sh.kv_heads  // k, v
            + 2 * Tr * d;             // the residual after attention, and mlp_norm's output
  double fp32 = 2 * Tr;               // the two norms' 1/rms
  if (c.qk_layernorm) {
    values += T * hd * (sh.heads + sh.kv_heads);  // q and k before their heads' RMSNorm
    fp32 += T * (sh.heads + sh.kv_heads);         // each head's 1/rms
  }
  if (keep == LayerKeep::Everything) {
    values += T * hd * sh.heads;  // attention output (wo input)
    fp32 += T * sh.heads;         // its rows' log-sum-exp
  }
  if (mlps.moe) {
    const double R = double(expert_rows_bound(c.capacity_factor, int(T), c.num_experts, c.router_topk, ep));
    values += 2 * R * d                            // the expert rows' inputs and outputs
              + mlp_hidden(c, R, sh.expert_ffn)    // each row's hidden activations
              + (ep > 1 ? K * T * d : 0.0);        // the rank's own rows' outputs, returned
    fp32 += T * c.num_experts  // router probabilities
            + 2 * K * T;       // each routed copy's token and weight
    if (c.shared_expert_size > 0) {
      values += mlp_hidden(c, T, sh.shared_ffn)  // the shared expert's hidden activations
                + T * d;                         // and its output, which the gate's gradient reads
      fp32 += c.shared_expert_gate ? T : 0.0;    // the gate's sigmoid
    }
  }
  if (mlps.dense) values += mlp_hidden(c, T, sh.ffn);
  return values * activation + fp32 * 4.0;
}

// The kind of MLP a layer has, or (full recompute's rebuilt layers) the
// kinds of a stage.
LayerMlps layer_mlps(const StageMlps& m) { return {.dense = m.dense_layers > 0, .moe = m.moe_layers > 0}; }

// What a micro-batch's slot keeps of each of the stage's layers
// (Transformer's slot_keep_).
std::vector<LayerKeep> slot_keep(const Layout& l, Recompute recompute, int layers) {
  const std::vector<RecomputeGroup> groups =
      recompute_groups({recompute, l.recompute_method, l.recompute_num_layers}, layers);
  std::vector<LayerKeep> keep;
  for (int i = 0; i < layers; ++i) {
    const RecomputeGroup& g = groups[size_t(i)];
    keep.push_back(g.recomputed ? (i == g.begin ? LayerKeep::Input : LayerKeep::Nothing)
                   : recompute == Recompute::Selective ? LayerKeep::AllButAttentionCore
                                                       : LayerKeep::Everything);
  }
  return keep;
}

// Bytes of one micro-batch's activation slot on a stage, as Activations
// (model/transformer.h) allocates it: the inputs and targets (int32 [T]),
// each token's document start with document masks, every layer's
// LayerActs, the stage's output [T_r, d]; on the last stage also the final
// norm's output and 1/rms, the fp32 logits of its vocabulary shard, each
// token's loss and the cross-entropy's statistics (3 T, fp32).
double slot_bytes(const ModelConfig& c, const TpShape& sh, const Layout& l, double activation, const StageSpan& span,
                  const std::vector<LayerKeep>& keep) {
  const double T = double(l.micro_batch) * c.seq_length, Tr = T / l.seq_split(), d = c.hidden_size;
  double bytes = 4.0 * (2 * T + (c.has_documents() ? T : 0.0));
  for (int i = span.begin; i < span.end_of(c); ++i)
    bytes += layer_activation_bytes(c, sh, l.micro_batch, activation, keep[size_t(i - span.begin)], l.ep,
                                    layer_mlps(stage_mlps(c, {i, i + 1, false, false})), l.seq_split());
  bytes += Tr * d * activation;  // out
  if (span.last) bytes += Tr * d * activation + 4.0 * (Tr + T * sh.vocab + T + 3 * T);
  return bytes;
}

// Bytes the Transformer holds beside its parameters and its slots
// (Transformer::workspace_bytes), for one micro-batch of b samples:
// - the backward pass's gradients (model/transformer.cpp): the FFN's output
//   and five of the residual width, of q and the attention output, of k
//   and v (and of q and k before their norm), on the last stage of the
//   logits;
// - a dense MLP's MlpScratch when the stage has dense layers;
// - when it has MoE layers, the MoeLayer's (one serves them all): the
//   router's scratch, the experts' gradients of their inputs, outputs and
//   hidden rows, the routing weights' gradient, the shared expert's
//   scratch and input gradient (and the gated output and the gate's
//   gradients), under EP the dispatch's two row buffers;
// - full recompute's rebuilt layers (the largest group, each layer with
//   every kind of MLP the stage has) and the group's output; selective
//   recompute's attention output and log-sum-exp;
// - sequence parallelism's gathered rows and gradient [T, d] and an input
//   gradient's own rows [T_r, d].
double workspace_bytes(const ModelConfig& c, const TpShape& sh, const Layout& l, double activation,
                       const StageSpan& span, Recompute recompute) {
  const double T = double(l.micro_batch) * c.seq_length, Tr = T / l.seq_split(), d = c.hidden_size,
               hd = c.head_dim();
  const int ep = l.ep;
  const bool rounded = activation < 4.0;  // the float32 gradients rounded for the products (bf16)
  const StageMlps mlps = stage_mlps(c, span);
  double values = 6 * T * d                   // ffn_out_, dres_, dh_, da_, dm_, dhf_
                  + 2 * T * hd * sh.heads     // of q and of the attention output
                  + 2 * T * hd * sh.kv_heads  // of k and v
                  + (c.qk_layernorm ? T * hd * (sh.heads + sh.kv_heads) : 0.0)  // of q and k before their norm
                  + (span.last ? T * sh.vocab : 0.0);  // the logits' gradient
  double fp32 = 0.0;
  if (mlps.dense_layers > 0) values += mlp_hidden(c, T, sh.ffn);  // of the hidden activations
  if (mlps.moe_layers > 0) {
    const double rows = T * c.router_topk, E = c.num_experts;
    const double R = double(expert_rows_bound(c.capacity_factor, int(T), c.num_experts, c.router_topk, ep));
    values += 2 * R * d + mlp_hidden(c, R, sh.expert_ffn)  // of the experts' outputs, inputs and hidden rows
              + (ep > 1 ? rows * d + R * d : 0.0)          // the rows on their way out and in
              + (rounded ? T * E : 0.0);                   // the router logits' gradient
    fp32 += rows + 2 * T * E;  // of the routing weights, probabilities and logits
    if (c.shared_expert_size > 0) {
      values += mlp_hidden(c, T, sh.shared_ffn) + T * d;  // of its hidden activations, and its input gradient
      if (c.shared_expert_gate) {
        values += T * d + (rounded ? T : 0.0);  // the gated output (then its gradient), the gate's logit
        fp32 += 2 * T;                          // the gate's dot(dout, s) and logit gradient
      }
    }
  }
  const int layers = span.end_of(c) - span.begin;
  int rebuilt = 0;
  for (const RecomputeGroup& g : recompute_groups({recompute, l.recompute_method, l.recompute_num_layers}, layers))
    if (g.recomputed) rebuilt = std::max(rebuilt, g.size());
  double bytes = values * activation + fp32 * 4.0;
  if (rebuilt > 0)
    bytes += rebuilt * layer_activation_bytes(c, sh, l.micro_batch, activation, LayerKeep::Everything, ep,
                                              layer_mlps(mlps), l.seq_split()) +
             Tr * d * activation;
  if (recompute == Recompute::Selective) bytes += T * hd * sh.heads * activation + T * sh.heads * 4.0;
  if (l.seq_split() > 1) bytes += (2 * T + Tr) * d * activation;
  return bytes;
}

// Bytes of RouterState (model/router.h) for each MoE layer: the step's kept
// and chosen counts (int64 [E] each), the expert bias and global_aux_loss's
// shares (float32 [E] each, when on).
double router_state_bytes(const ModelConfig& c) {
  const double E = c.num_experts;
  return 16.0 * E + (c.expert_bias ? 4.0 * E : 0.0) + (c.load_balancing_type == "global_aux_loss" ? 4.0 * E : 0.0);
}

}  // namespace

RankMemory rank_memory(const PlanInputs& in, const BytesPerParameter& bytes, const RankCounts& rc,
                       const StageSpan& span, int tp_rank, int stage, int live_micro_batches) {
  const ModelConfig& c = in.model;
  const Layout& l = in.layout;
  const MicroBatch mb = micro_batch_of(in, bytes);
  const int layers = span.end_of(c) - span.begin;
  RankMemory m;
  m.tp = tp_rank;
  m.pp = stage;
  m.layer_begin = span.begin;
  m.layer_end = span.end_of(c);
  m.parameters = rc.parameters;
  m.expert_parameters = rc.expert_parameters;
  // The regions of lay_out_regions, each padded to and sharded over its group.
  const int edp = l.dp / l.ep;
  const int64_t shared = l.ep > 1 ? rc.parameters - rc.expert_parameters : rc.parameters;
  const int64_t experts = l.ep > 1 ? rc.expert_parameters : 0;
  const int64_t shared_padded = (shared + l.dp - 1) / l.dp * l.dp, experts_padded = (experts + edp - 1) / edp * edp;
  m.padded_parameters = shared_padded + experts_padded;
  m.shard_parameters = shared_padded / l.dp + experts_padded / edp;
  const double padded = double(m.padded_parameters), shard = double(m.shard_parameters);
  m.weights = bytes.weights * padded;
  // The whole accumulation buffer, and the shard the reduce-scatter fills.
  m.gradients = bytes.gradients * padded + (l.dp > 1 ? bytes.gradient_shard * shard : 0.0) +
                bytes.widened_shard * shard + bytes.unit_gradients * double(rc.largest_grad_unit);
  m.optimizer = bytes.optimizer * shard;
  // Ring reduce-scatter and all-gather over each region's group.
  const double reduced = double(shared_padded) * (l.dp > 1) + double(experts_padded) * (edp > 1);
  m.dp_reduce_scatter_bytes = bytes.gradients * reduced;
  m.dp_all_gather_bytes = bytes.weights * reduced;
  m.dp_sent_bytes = (bytes.gradients + bytes.weights) *
                    (double(shared_padded) * (l.dp - 1) / l.dp + double(experts_padded) * (edp - 1) / edp);
  m.expert_rows = c.is_moe() ? expert_rows_bound(c.capacity_factor, int(mb.tokens), c.num_experts, c.router_topk, l.ep)
                             : 0;
  const TpShape shape = tp_shape(c, tp_rank, l.tp);
  const StageMlps mlps = stage_mlps(c, span);
  m.live_micro_batches = live_micro_batches;
  m.router_state = double(mlps.moe_layers) * router_state_bytes(c);
  auto held = [&](Recompute recompute) {
    RankMemory::Held h;
    h.per_micro_batch = slot_bytes(c, shape, l, bytes.activation, span, slot_keep(l, recompute, layers));
    h.activations = live_micro_batches * h.per_micro_batch;
    h.workspace = workspace_bytes(c, shape, l, bytes.activation, span, recompute);
    return h;
  };
  m.none = held(Recompute::None);
  m.selective = held(Recompute::Selective);
  m.full = held(Recompute::Full);
  const RankMemory::Held& at = l.recompute == Recompute::Full        ? m.full
                               : l.recompute == Recompute::Selective ? m.selective
                                                                     : m.none;
  m.activations_per_micro_batch = at.per_micro_batch;
  m.activations = at.activations;
  m.workspace = at.workspace;
  return m;
}

void plan_serving_memory(PlanResult& r) {
  const ModelConfig& c = r.inputs.model;
  const int tp = r.inputs.layout.tp;
  const double S = c.seq_length, kv_head = kv_bytes_per_token_head(c.head_dim());
  r.serving.kv_per_sequence = kv_head * c.num_query_groups * S * c.num_layers;
  r.serving.kv_per_sequence_mha = kv_head * c.num_heads * S * c.num_layers;
  for (const RankMemory& rm : r.ranks) {
    const int layers = rm.layer_end - rm.layer_begin;
    r.serving.weights_fp16 = std::max(r.serving.weights_fp16, 2.0 * double(rm.parameters));
    r.serving.weights_fp8 = std::max(r.serving.weights_fp8, 1.0 * double(rm.parameters));
    r.serving.kv_per_sequence_per_gpu = std::max(r.serving.kv_per_sequence_per_gpu,
                                                 kv_head * tp_shape(c, rm.tp, tp).kv_heads * S * layers);
    r.serving.kv_per_sequence_per_gpu_mha =
        std::max(r.serving.kv_per_sequence_per_gpu_mha, kv_head * (double(c.num_heads) / tp) * S * layers);
  }
}

}  // namespace mt
