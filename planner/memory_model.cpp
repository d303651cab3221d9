#include "planner/cost_model.h"

#include <algorithm>

#include "model/router.h"

namespace mt {

namespace {

// Elements an MLP of hidden size F (this TP rank's share) keeps for `rows`
// rows (MlpActs, model/dense_mlp.h), or works in backward (MlpScratch): the
// activation's input and output, and under SwiGLU the up projection's
// output too (u, u3 and the gated product g; du, du3 and dg).
double mlp_hidden(const ModelConfig& c, double rows, double F) { return (c.swiglu ? 3.0 : 2.0) * rows * F; }

// Bytes one TP rank keeps for one layer and one micro-batch of b samples
// (T = b S tokens) between its forward and its backward, as LayerActs
// (model/transformer.h) allocates them: the tensors of Korthikanti et al.
// (2022), section 4, for this model (no dropout, RMSNorm, G kv heads, K of E
// experts, tiled attention that keeps each row's log-sum-exp instead of the
// S x S scores), without sequence parallelism (the residual stream is whole
// on every TP rank). Activations take `activation` bytes; statistics,
// routing weights and token indices 4. keep_attention_core: the attention
// output and log-sum-exp (selective recompute rebuilds them). mlps: the
// MLPs the layer holds, a dense layer's or an MoE layer's (a layer full
// recompute rebuilds holds both when its stage has both kinds).
// Expert rows R = expert_rows_bound (T K without EP); under EP also the
// outputs of the rank's own T K rows, back from the all-to-all.
double layer_activation_bytes(const ModelConfig& c, const TpShape& sh, int64_t b, double activation,
                              bool keep_attention_core, int ep, const StageMlps& mlps) {
  const double T = double(b) * c.seq_length, d = c.hidden_size, hd = c.head_dim();
  const double K = c.router_topk;
  double values = 2 * T * d                  // the layer's input (the residual) and attn_norm's output
                  + T * hd * sh.heads         // q
                  + 2 * T * hd * sh.kv_heads  // k, v
                  + 2 * T * d;                // the residual after attention, and mlp_norm's output
  double fp32 = 2 * T;                        // the two norms' 1/rms
  if (c.qk_layernorm) {
    values += T * hd * (sh.heads + sh.kv_heads);  // q and k before their heads' RMSNorm
    fp32 += T * (sh.heads + sh.kv_heads);         // each head's 1/rms
  }
  if (keep_attention_core) {
    values += T * hd * sh.heads;  // attention output (wo input)
    fp32 += T * sh.heads;         // its rows' log-sum-exp
  }
  if (mlps.moe_layers > 0) {
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
  if (mlps.dense_layers > 0) values += mlp_hidden(c, T, sh.ffn);
  return values * activation + fp32 * 4.0;
}

// Bytes of one micro-batch's gradients the backward pass works in, held
// once whatever the recompute (model/transformer.cpp): the residual
// width's, q's, k's, v's and the attention output's; the dense MLPs'
// MlpScratch when the stage has dense layers; the MoE layer's router,
// expert and shared-expert scratch when it has MoE layers (one MoeLayer
// serves them all); under EP also the dispatch's two row buffers
// (ExpertDispatch).
double backward_workspace_bytes(const ModelConfig& c, const TpShape& sh, int64_t b, double activation, bool last,
                                int ep, const StageMlps& mlps) {
  const double T = double(b) * c.seq_length, d = c.hidden_size, hd = c.head_dim();
  const bool rounded = activation < 4.0;  // the float32 gradients rounded for the products (bf16)
  double values = 7 * T * d                   // the MLP's output, and six gradients of the residual width
                  + 2 * T * hd * sh.heads     // of q and of the attention output
                  + 2 * T * hd * sh.kv_heads  // of k and v
                  + (c.qk_layernorm ? T * hd * (sh.heads + sh.kv_heads) : 0.0)  // of q and k before their norm
                  + (last ? T * sh.vocab : 0.0);  // the logits' gradient
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
  return values * activation + fp32 * 4.0;
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
  m.gradients = bytes.gradients * padded + (l.dp > 1 ? bytes.gradient_shard * shard : 0.0);
  m.optimizer = bytes.optimizer * shard;
  // Ring reduce-scatter and all-gather over each region's group.
  const double reduced = double(shared_padded) * (l.dp > 1) + double(experts_padded) * (edp > 1);
  m.dp_reduce_scatter_bytes = bytes.gradients * reduced;
  m.dp_all_gather_bytes = bytes.weights * reduced;
  m.dp_sent_bytes = (bytes.gradients + bytes.weights) *
                    (double(shared_padded) * (l.dp - 1) / l.dp + double(experts_padded) * (edp - 1) / edp);
  m.expert_rows = c.is_moe() ? expert_rows_bound(c.capacity_factor, int(mb.tokens), c.num_experts, c.router_topk, l.ep)
                             : 0;
  // The last stage also keeps the final norm's input and output and the
  // fp32 logits of its vocabulary shard for the cross-entropy.
  const double head =
      span.last ? 2 * mb.activation_bytes + mb.tokens * (double(c.vocab_size) / l.tp) * 4.0 : 0.0;
  const TpShape shape = tp_shape(c, tp_rank, l.tp);
  // A layer's bytes: its own MLP's (dense or MoE), or, for full
  // recompute's rebuilt layers, those of every kind the stage has.
  const StageMlps mlps = stage_mlps(c, span);
  auto layer_bytes = [&](int layer, bool keep_core) {
    const StageMlps own = stage_mlps(c, {layer, layer + 1, false, false});  // this layer's kind alone
    return layer_activation_bytes(c, shape, l.micro_batch, bytes.activation, keep_core, l.ep, own);
  };
  double all_full = 0.0, all_selective = 0.0;  // the stage's layers
  for (int i = span.begin; i < m.layer_end; ++i) {
    all_full += layer_bytes(i, true);
    all_selective += layer_bytes(i, false);
  }
  const double core = layer_bytes(span.begin, true) - layer_bytes(span.begin, false);
  const int live = live_micro_batches;
  m.live_micro_batches = live;
  m.workspace = backward_workspace_bytes(c, shape, l.micro_batch, bytes.activation, span.last, l.ep, mlps);
  m.router_state = double(mlps.moe_layers) * router_state_bytes(c);
  m.activations_none = live * (all_full + head);
  // Selective: one layer's attention core at a time, rebuilt in the backward.
  m.activations_selective = live * (all_selective + head) + core;
  // Full: a recomputed group keeps its first layer's input, and the
  // backward rebuilds one group at a time (and its output).
  const std::vector<RecomputeGroup> groups =
      recompute_groups({Recompute::Full, l.recompute_method, l.recompute_num_layers}, layers);
  double kept = 0.0;
  int rebuilt = 0;
  for (int i = 0; i < layers; ++i) {
    const RecomputeGroup& g = groups[size_t(i)];
    kept += !g.recomputed ? layer_bytes(span.begin + i, true) : i == g.begin ? mb.activation_bytes : 0.0;
    if (g.recomputed) rebuilt = std::max(rebuilt, g.size());
  }
  const double rebuilt_layer = layer_activation_bytes(c, shape, l.micro_batch, bytes.activation, true, l.ep, mlps);
  m.activations_full = live * (kept + head) + (rebuilt > 0 ? rebuilt * rebuilt_layer + mb.activation_bytes : 0.0);
  m.activations = l.recompute == Recompute::Full        ? m.activations_full
                  : l.recompute == Recompute::Selective ? m.activations_selective
                                                        : m.activations_none;
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
