#include "launch/plan.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "model/parameters.h"
#include "model/routing.h"
#include "runtime/check.h"

namespace mt {

std::string to_string(Precision p) { return p == Precision::BF16 ? "bf16" : "fp32"; }


namespace {


// The stage spans of a layout, as `train` makes them.
std::vector<StageSpan> stage_spans(const ModelConfig& c, const Layout& l) {
  std::vector<StageSpan> spans;
  for (int s = 0; s < l.pp; ++s)
    spans.push_back(stage_span(c.num_layers, s, l.pp, l.first_stage_layers, l.last_stage_layers));
  return spans;
}

bool is_expert_tensor(const std::string& name) {
  return name.find("/experts/") != std::string::npos || name.find("/mlp/") != std::string::npos;
}

// What one (TP rank, stage) holds, from the same param_table `train` builds
// its buffers from.
struct RankCounts {
  int64_t parameters = 0;
  int64_t expert_parameters = 0;  // of its experts (every MoE layer's E/EP)
  // Weights one token's forward multiplies: expert tensors at K/E of their
  // size (a token visits K of the E experts), no embedding (a lookup).
  double active_weights = 0;
  int64_t partial_grad = 0;  // elements whose gradient is summed over TP once a step
};

// counts[stage * tp + tp_rank]. One table of the whole model per TP rank,
// each tensor counted on the stage whose span holds it: the same tensors as
// param_table(cfg, tp_rank, tp, span) of each stage, without building a
// table per stage (the search looks at thousands of layouts).
// Under EP every EP rank holds as many experts: EP rank 0 stands for all.
std::vector<RankCounts> rank_counts(const ModelConfig& c, int tp, const std::vector<StageSpan>& spans, int ep = 1) {
  const int pp = int(spans.size());
  std::vector<RankCounts> counts(size_t(pp) * tp);
  // A token's rows pass through K experts' weights; the rank holds E/EP.
  const double routed_share = double(c.router_topk) * ep / double(c.num_experts);
  for (int t = 0; t < tp; ++t) {
    for (const ParamTensor& p : param_table(c, t, tp, {}, 0, ep)) {
      int stage = 0;
      while (stage < pp && !spans[stage].holds(p.name, c)) ++stage;
      MT_CHECK(stage < pp, "no pipeline stage holds tensor {}", p.name);
      RankCounts& rc = counts[size_t(stage) * tp + t];
      rc.parameters += int64_t(p.numel);
      if (p.is_expert) rc.expert_parameters += int64_t(p.numel);
      const double share = is_expert_tensor(p.name) && c.is_moe() ? routed_share : 1.0;
      if (p.name != "embed") rc.active_weights += double(p.numel) * share;
      if (p.partial_grad) rc.partial_grad += int64_t(p.numel);
    }
  }
  return counts;
}

// Bytes one TP rank keeps for one layer and one micro-batch of b samples
// (T = b S tokens) between its forward and its backward, as LayerActs
// (model/transformer.h) allocates them: the tensors of Korthikanti et al.
// (2022), section 4, for this model (no dropout, RMSNorm, G kv heads, K of E
// experts, tiled attention that keeps each row's log-sum-exp instead of the
// S x S scores), without sequence parallelism (the residual stream is whole
// on every TP rank). Activations take `activation` bytes; statistics,
// routing weights and token indices 4. keep_attention_core: the attention
// output and log-sum-exp (selective recompute rebuilds them).
// Expert rows R = expert_rows_bound (T K without EP); under EP also the
// outputs of the rank's own T K rows, back from the all-to-all.
double layer_activation_bytes(const ModelConfig& c, const TpShape& sh, int64_t b, double activation,
                              bool keep_attention_core, int ep = 1) {
  const double T = double(b) * c.seq_length, d = c.hidden_size, hd = c.head_dim();
  const double K = c.router_topk, F = sh.ffn;  // F / TP
  const double R = double(expert_rows_bound(c.capacity_factor, int(T), c.num_experts, c.router_topk, ep));
  double values = 2 * T * d                  // the layer's input (the residual) and attn_norm's output
                  + T * hd * sh.heads         // q
                  + 2 * T * hd * sh.kv_heads  // k, v
                  + 2 * T * d;                // the residual after attention, and mlp_norm's output
  double fp32 = 2 * T;                        // the two norms' 1/rms
  if (keep_attention_core) {
    values += T * hd * sh.heads;  // attention output (wo input)
    fp32 += T * sh.heads;         // its rows' log-sum-exp
  }
  if (c.is_moe()) {
    values += 2 * R * d             // the expert rows' inputs and outputs
              + 2 * R * F           // GELU input and output of each row
              + (ep > 1 ? K * T * d : 0.0);  // the rank's own rows' outputs, returned
    fp32 += T * c.num_experts      // router probabilities
            + 2 * K * T;           // each routed copy's token and weight
  } else {
    values += 2 * T * F;
  }
  return values * activation + fp32 * 4.0;
}

// Bytes of one micro-batch's gradients the backward pass works in, held
// once whatever the recompute (model/transformer.cpp and FfnScratch).
// Under EP also the dispatch's two row buffers (ExpertDispatch).
double backward_workspace_bytes(const ModelConfig& c, const TpShape& sh, int64_t b, double activation, bool last,
                                int ep = 1) {
  const double T = double(b) * c.seq_length, d = c.hidden_size, hd = c.head_dim();
  const double rows = T * c.router_topk, F = sh.ffn, E = c.num_experts;
  const double R = c.is_moe()
                       ? double(expert_rows_bound(c.capacity_factor, int(T), c.num_experts, c.router_topk, ep))
                       : rows;
  double values = 7 * T * d                           // the FFN's output, and six gradients of the residual width
                  + 2 * T * hd * sh.heads             // of q and of the attention output
                  + 2 * T * hd * sh.kv_heads          // of k and v
                  + 2 * R * d + 2 * R * F             // of the experts' outputs and inputs, GELU's output and input
                  + (ep > 1 ? rows * d + R * d : 0.0)  // the rows on their way out and in
                  + (activation < 4.0 ? T * E : 0.0)  // the router logits' gradient rounded for the products
                  + (last ? T * sh.vocab : 0.0);      // the logits' gradient
  const double fp32 = rows + 2 * T * E;               // of the routing weights, probabilities and logits
  return values * activation + fp32 * 4.0;
}

// Bytes/s of the link a group of `span` consecutive ranks talks over.
double link_bandwidth(const GpuSpec& g, int span) {
  return span <= g.gpus_per_node && g.gpus_per_node % span == 0 ? g.nvlink_bandwidth : g.network_bandwidth;
}
std::string link_name(const GpuSpec& g, int span) {
  return span <= g.gpus_per_node && g.gpus_per_node % span == 0 ? "nvlink" : "network";
}

double peak_flops(const GpuSpec& g, Precision p) {
  return p == Precision::BF16 ? g.peak_flops_16bit : g.peak_flops_tf32;
}

// The message of an mt::Error without its "[rank R] file:line: " prefix.
std::string error_text(const Error& e) {
  const std::string what = e.what();
  const size_t close = what.find("] ");
  const size_t colon = close == std::string::npos ? std::string::npos : what.find(": ", close);
  return colon == std::string::npos ? what : what.substr(colon + 2);
}

FlopCounts count_flops(const ModelConfig& c, const ParameterCounts& params, Recompute recompute) {
  FlopCounts f;
  f.forward_2n = 2.0 * double(params.active);
  f.dense_forward_2n = 2.0 * double(params.total);
  f.train = c.train_flops_per_token();
  f.forward = f.train / 3.0;
  const double attention_flops = 4.0 * c.seq_length * c.hidden_size * c.num_layers;  // QK^T and PV
  f.train_with_recompute = f.train + (recompute == Recompute::Full        ? f.forward
                                      : recompute == Recompute::Selective ? attention_flops
                                                                          : 0.0);
  return f;
}

// What the parts below share about one micro-batch.
struct MicroBatch {
  double tokens;            // T = micro-batch x S
  double activation_bytes;  // T d activations: a layer's output, a stage's input
};
MicroBatch micro_batch_of(const PlanInputs& in, const BytesPerParameter& bytes) {
  const double tokens = double(in.layout.micro_batch) * double(in.model.seq_length);
  return {tokens, tokens * in.model.hidden_size * bytes.activation};
}

// Ring all-reduce, reduce-scatter or all-gather: what each GPU sends, as a
// share of the payload.
double ring_share(int group) { return group > 1 ? 2.0 * (group - 1) / group : 0.0; }

// The bytes one (TP rank, stage) holds: weights, gradients, optimizer state
// of its parameters, and the activations of its live micro-batches.
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
  const double full_layer = layer_activation_bytes(c, shape, l.micro_batch, bytes.activation, true, l.ep);
  const double selective_layer = layer_activation_bytes(c, shape, l.micro_batch, bytes.activation, false, l.ep);
  const int live = live_micro_batches;
  m.live_micro_batches = live;
  m.workspace = backward_workspace_bytes(c, shape, l.micro_batch, bytes.activation, span.last, l.ep);
  m.activations_none = live * (layers * full_layer + head);
  // Selective: one layer's attention core at a time, rebuilt in the backward.
  m.activations_selective = live * (layers * selective_layer + head) + (full_layer - selective_layer);
  // Full: a recomputed group keeps its first layer's input, and the
  // backward rebuilds one group at a time (and its output).
  const std::vector<RecomputeGroup> groups =
      recompute_groups({Recompute::Full, l.recompute_method, l.recompute_num_layers}, layers);
  double kept = 0.0;
  int rebuilt = 0;
  for (int i = 0; i < layers; ++i) {
    const RecomputeGroup& g = groups[size_t(i)];
    kept += !g.recomputed ? full_layer : i == g.begin ? mb.activation_bytes : 0.0;
    if (g.recomputed) rebuilt = std::max(rebuilt, g.size());
  }
  m.activations_full = live * (kept + head) + (rebuilt > 0 ? rebuilt * full_layer + mb.activation_bytes : 0.0);
  m.activations = l.recompute == Recompute::Full        ? m.activations_full
                  : l.recompute == Recompute::Selective ? m.activations_selective
                                                        : m.activations_none;
  return m;
}

// One stage's work for one micro-batch on its busiest TP rank, and its
// communication.
StageCost stage_cost(const PlanInputs& in, const BytesPerParameter& bytes, const std::vector<RankCounts>& counts,
                     const StageSpan& span, int stage) {
  const ModelConfig& c = in.model;
  const Layout& l = in.layout;
  const MicroBatch mb = micro_batch_of(in, bytes);
  StageCost cost;
  cost.stage = stage;
  cost.layers = span.end_of(c) - span.begin;
  for (int t = 0; t < l.tp; ++t) {
    const RankCounts& rc = counts[size_t(stage) * l.tp + t];
    // FLOPs of one micro-batch on this GPU: its weights' products and its
    // heads' attention scores; the backward is twice the forward.
    const double scores = double(cost.layers) * 4.0 * double(c.seq_length) * c.head_dim() * tp_shape(c, t, l.tp).heads;
    const double forward = mb.tokens * (2.0 * rc.active_weights + scores);
    const double recomputed = l.recompute == Recompute::Full        ? forward
                              : l.recompute == Recompute::Selective ? mb.tokens * scores
                                                                    : 0.0;
    cost.forward_flops = std::max(cost.forward_flops, forward);
    cost.compute_flops = std::max(cost.compute_flops, 3.0 * forward + recomputed);
  }
  // TP all-reduces of one micro-batch (every TP rank takes part in each):
  // per layer the attention and FFN outputs forward and the gradients of
  // their inputs backward (and the forward's again under full recompute),
  // T d activations each; the routing weights' gradients (T K, fp32); the
  // embedding's output; the LM head's input gradient and the vocab-parallel
  // cross-entropy's row max and sums (3 T, fp32). Once a step: the
  // gradients TP ranks hold partial sums of, and the gradient norm.
  if (l.tp > 1) {
    const double per_layer = (l.recompute == Recompute::Full ? 6.0 : 4.0) * mb.activation_bytes +
                             (c.is_moe() ? mb.tokens * c.router_topk * 4.0 : 0.0);
    cost.tp_bytes = cost.layers * per_layer + (span.first ? mb.activation_bytes : 0.0) +
                    (span.last ? mb.activation_bytes + 3.0 * mb.tokens * 4.0 : 0.0);
    cost.tp_sent_bytes = cost.tp_bytes * ring_share(l.tp);
    cost.tp_once_bytes = double(counts[size_t(stage) * l.tp].partial_grad) * bytes.gradients + 8.0;
  }
  cost.pp_sent_bytes = (stage < l.pp - 1 ? mb.activation_bytes : 0.0) + (stage > 0 ? mb.activation_bytes : 0.0);
  if (l.ep > 1 && c.is_moe()) {
    const double away = double(l.ep - 1) / l.ep;  // of the rows, to experts on other ranks
    const double rows = away * mb.tokens * c.router_topk * c.hidden_size * bytes.activation;
    const double forwards = l.recompute == Recompute::Full ? 2.0 : 1.0;  // each exchanges the row counts
    const double counts = forwards * (l.ep - 1) * (c.num_experts / l.ep) * 4.0;
    const double passes = 2.0 * forwards + 2.0;  // x out, y back each forward; dy out, dx back
    cost.ep_sent_bytes = cost.layers * (passes * rows + counts);
  }
  return cost;
}

// Every (TP rank, stage)'s memory and every stage's work.
void plan_ranks_and_stages(PlanResult& r, const std::vector<RankCounts>& counts,
                           const std::vector<StageSpan>& spans) {
  const Layout& l = r.inputs.layout;
  for (int s = 0; s < l.pp; ++s) {
    const int live = peak_live_activations(pipeline_steps(l.schedule, s, l.pp, int(r.micro_batches)));
    for (int t = 0; t < l.tp; ++t)
      r.ranks.push_back(rank_memory(r.inputs, r.bytes, counts[size_t(s) * l.tp + t], spans[s], t, s, live));
    r.stages.push_back(stage_cost(r.inputs, r.bytes, counts, spans[s], s));
  }
  for (size_t i = 0; i < r.ranks.size(); ++i)
    if (r.ranks[i].total() > r.ranks[size_t(r.largest_rank)].total()) r.largest_rank = int(i);
}

// The bytes of a step, the busiest GPU of each kind of group.
void plan_communication(PlanResult& r) {
  const Layout& l = r.inputs.layout;
  const double micro_batches = double(r.micro_batches);
  for (StageCost& sc : r.stages) {
    sc.tp_step_bytes = micro_batches * sc.tp_bytes + sc.tp_once_bytes;
    r.comm.tp_bytes = std::max(r.comm.tp_bytes, sc.tp_step_bytes);
    r.comm.tp_sent_bytes = std::max(r.comm.tp_sent_bytes, sc.tp_step_bytes * ring_share(l.tp));
    r.comm.pp_sent_bytes = std::max(r.comm.pp_sent_bytes, micro_batches * sc.pp_sent_bytes);
  }
  for (const StageCost& sc : r.stages)
    r.comm.ep_sent_bytes = std::max(r.comm.ep_sent_bytes, micro_batches * sc.ep_sent_bytes);
  for (const RankMemory& rm : r.ranks) r.comm.dp_sent_bytes = std::max(r.comm.dp_sent_bytes, rm.dp_sent_bytes);
}

// K and V of one token in one layer, per kv head, at fp16.
constexpr double kv_bytes_per_token_head(double head_dim) { return 2.0 * head_dim * 2.0; }

// Serving memory: weights at fp16/fp8, the KV cache at fp16.
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

void set_pipeline_idle(PlanResult& r, const std::vector<double>& slot) {
  r.bubble_fraction = pipeline_bubble(slot, r.micro_batches);
  const std::vector<double> idle = pipeline_idle(slot, r.micro_batches);
  for (size_t s = 0; s < idle.size(); ++s) r.stages[s].idle = idle[s];
}

// A step's time on the cluster: a micro-batch slot of a stage is its
// products at the assumed share of the peak, its TP all-reduces (on the
// critical path: each waits for the product before it), and receiving its
// input and its output's gradient; the pipeline runs m slots with its
// bubble; ZeRO-1 follows once the pipeline drains (not overlapped).
struct StepTimeModel {
  double slot_max = 0, slot_sum = 0, compute_max = 0;
  double tp_once_s = 0;  // the once-a-step TP reductions
  double dp_s = 0;
  // Estimated seconds of a step of `micro_batches` per replica.
  double step_s(int64_t micro_batches) const {
    return double(micro_batches - 1) * slot_max + slot_sum + dp_s + tp_once_s;
  }
};

StepTimeModel plan_step_time(PlanResult& r, const GpuSpec& g) {
  const PlanInputs& in = r.inputs;
  const Layout& l = in.layout;
  const double peak = peak_flops(g, in.precision);
  const double tp_bandwidth = link_bandwidth(g, l.tp), pp_bandwidth = link_bandwidth(g, l.tp * l.dp * l.pp),
               dp_bandwidth = link_bandwidth(g, l.tp * l.dp), ep_bandwidth = link_bandwidth(g, l.tp * l.ep);
  const MicroBatch mb = micro_batch_of(in, r.bytes);
  r.comm.tp_link = link_name(g, l.tp);
  r.comm.pp_link = link_name(g, l.tp * l.dp * l.pp);
  r.comm.dp_link = link_name(g, l.tp * l.dp);
  r.comm.ep_link = link_name(g, l.tp * l.ep);
  StepTimeModel model;
  std::vector<double> slot;
  for (StageCost& sc : r.stages) {
    const double compute = sc.compute_flops / (peak * in.compute_efficiency);
    const double tp_s = sc.tp_sent_bytes / tp_bandwidth;
    const double pp_s = l.pp > 1 ? 2.0 * mb.activation_bytes / pp_bandwidth : 0.0;
    const double ep_s = sc.ep_sent_bytes / ep_bandwidth;  // blocking: on the critical path
    sc.slot_s = compute + tp_s + pp_s + ep_s;
    slot.push_back(sc.slot_s);
    model.compute_max = std::max(model.compute_max, compute);
    model.tp_once_s = std::max(model.tp_once_s, sc.tp_once_bytes * ring_share(l.tp) / tp_bandwidth);
  }
  set_pipeline_idle(r, slot);
  model.slot_max = *std::max_element(slot.begin(), slot.end());
  for (double x : slot) model.slot_sum += x;
  model.dp_s = r.comm.dp_s = r.comm.dp_sent_bytes / dp_bandwidth;
  const double micro_batches = double(r.micro_batches);
  for (const StageCost& sc : r.stages)
    r.comm.tp_s = std::max(r.comm.tp_s, micro_batches * sc.tp_sent_bytes / tp_bandwidth + model.tp_once_s);
  r.comm.pp_s = l.pp > 1 ? micro_batches * 2.0 * mb.activation_bytes / pp_bandwidth : 0.0;
  r.comm.ep_s = r.comm.ep_sent_bytes / ep_bandwidth;
  return model;
}

Timing plan_timing(const PlanResult& r, const StepTimeModel& model, const GpuSpec& g) {
  const PlanInputs& in = r.inputs;
  const double peak = peak_flops(g, in.precision);
  const double step_flops = r.flops.train * double(r.batch_tokens);
  const double gpus = in.num_gpus();
  Timing tm;
  tm.pipeline_s = double(r.micro_batches - 1) * model.slot_max + model.slot_sum;
  tm.compute_s = double(r.micro_batches) * model.compute_max;
  tm.dp_s = model.dp_s;
  tm.estimated_step_s = model.step_s(r.micro_batches);
  tm.estimated_mfu = step_flops / (tm.estimated_step_s * gpus * peak);
  tm.mfu_assumed = in.mfu > 0;
  tm.mfu = tm.mfu_assumed ? in.mfu : tm.estimated_mfu;
  tm.step_s = tm.mfu_assumed ? step_flops / (in.mfu * gpus * peak) : tm.estimated_step_s;
  tm.tokens_per_s = double(r.batch_tokens) / tm.step_s;
  return tm;
}

// Seconds to train on --train-tokens: the ramp-up's smaller batches step by
// step (more bubble under the cost model; the same tokens/s under an
// assumed MFU), then the rest at the full batch.
double training_seconds(const PlanResult& r, const StepTimeModel& model, const Timing& tm, const GpuSpec& g) {
  const PlanInputs& in = r.inputs;
  const Layout& l = in.layout;
  const double seq_length = in.model.seq_length, gpus = in.num_gpus(), peak = peak_flops(g, in.precision);
  const data::BatchSchedule batches(in.global_batch, l.micro_batch, l.dp, in.rampup);
  double seconds = 0, tokens = 0;
  int64_t consumed = 0;
  while (in.rampup.start > 0 && tokens < in.train_tokens) {
    const int64_t global = batches.global_batch(consumed);
    if (global == in.global_batch) break;  // ramped up
    // The steps at this size: the most k whose last step still takes
    // `global` (doubling, then halving), at most what the run needs.
    const double step_tokens = double(global) * seq_length;
    const int64_t needed = int64_t(std::ceil((in.train_tokens - tokens) / step_tokens));
    auto same_size = [&](int64_t k) {
      return k <= needed && batches.global_batch(consumed + (k - 1) * global) == global;
    };
    int64_t k = 1;
    while (same_size(2 * k)) k *= 2;
    for (int64_t step = k / 2; step >= 1; step /= 2)
      if (same_size(k + step)) k += step;
    seconds += double(k) * (tm.mfu_assumed ? r.flops.train * step_tokens / (in.mfu * gpus * peak)
                                           : model.step_s(global / (int64_t(l.micro_batch) * l.dp)));
    consumed += k * global;
    tokens += double(k) * step_tokens;
  }
  if (tokens < in.train_tokens) seconds += (in.train_tokens - tokens) / tm.tokens_per_s;
  return seconds;
}

// Serving at batch 1: each token reads every stage's active weights and its
// KV cache once, stage after stage; TP ranks read their shards at once.
// Sequences a GPU holds: fp16 weights, the rest of its memory for KV.
void plan_serving_speed(PlanResult& r, const std::vector<RankCounts>& counts, const GpuSpec& g) {
  const ModelConfig& c = r.inputs.model;
  const Layout& l = r.inputs.layout;
  const double S = c.seq_length, kv_head = kv_bytes_per_token_head(c.head_dim());
  double token_s_fp16 = 0, token_s_fp8 = 0;
  for (int s = 0; s < l.pp; ++s) {
    double fp16 = 0, fp8 = 0;
    for (int t = 0; t < l.tp; ++t) {
      const RankCounts& rc = counts[size_t(s) * l.tp + t];
      const double kv = kv_head * tp_shape(c, t, l.tp).kv_heads * S * r.stages[s].layers;
      fp16 = std::max(fp16, 2.0 * rc.active_weights + kv);
      fp8 = std::max(fp8, 1.0 * rc.active_weights + kv);
    }
    token_s_fp16 += fp16 / g.memory_bandwidth;
    token_s_fp8 += fp8 / g.memory_bandwidth;
  }
  r.serving.tokens_per_s_fp16 = 1.0 / token_s_fp16;
  r.serving.tokens_per_s_fp8 = 1.0 / token_s_fp8;
  int64_t sequences = -1;
  for (const RankMemory& rm : r.ranks) {
    const double kv = kv_head * tp_shape(c, rm.tp, l.tp).kv_heads * S * (rm.layer_end - rm.layer_begin);
    const double room = std::max(0.0, g.memory_bytes - 2.0 * double(rm.parameters));
    const int64_t fit = kv > 0 ? int64_t(room / kv) : 0;
    sequences = sequences < 0 ? fit : std::min(sequences, fit);
  }
  r.serving.sequences_per_gpu = std::max<int64_t>(sequences, 0);
}

PlanResult plan_with_counts(const PlanInputs& in, const ParameterCounts& params,
                            const std::vector<RankCounts>& counts, const std::vector<StageSpan>& spans) {
  const ModelConfig& c = in.model;
  const Layout& l = in.layout;
  PlanResult r;
  r.inputs = in;
  r.bytes = bytes_per_parameter(in.precision);
  r.params = params;
  r.flops = count_flops(c, params, l.recompute);
  r.micro_batches = in.global_batch / (int64_t(l.micro_batch) * l.dp);
  r.batch_tokens = in.global_batch * c.seq_length;
  r.tokens_per_expert = double(r.batch_tokens) * c.router_topk / c.num_experts;
  plan_ranks_and_stages(r, counts, spans);
  plan_communication(r);
  plan_serving_memory(r);
  if (!in.gpu) {  // the bubble from the stages' FLOPs alone
    std::vector<double> slot;
    for (const StageCost& sc : r.stages) slot.push_back(sc.compute_flops);
    set_pipeline_idle(r, slot);
    return r;
  }
  const GpuSpec& g = *in.gpu;
  r.memory_capacity = g.memory_bytes;
  r.fits = r.ranks[size_t(r.largest_rank)].total() <= g.memory_bytes;
  const StepTimeModel step_time = plan_step_time(r, g);
  Timing tm = plan_timing(r, step_time, g);
  if (in.train_tokens > 0) {
    tm.train_s = training_seconds(r, step_time, tm, g);
    tm.gpu_hours = tm.train_s / 3600.0 * in.num_gpus();
    tm.cost = tm.gpu_hours * in.gpu_hour_cost;
  }
  r.timing = tm;
  plan_serving_speed(r, counts, g);
  return r;
}

}  // namespace

BytesPerParameter bytes_per_parameter(Precision p) {
  if (p == Precision::BF16) return {2, 4, 4, 12, 2};
  return {4, 4, 4, 8, 4};
}

PlanInputs resolve_plan_inputs(const PlanOptions& o) {
  TrainOptions t = o.train;
  resolve_model_and_batch(t);
  PlanInputs in;
  in.model = t.model;
  in.rampup = t.rampup;
  in.global_batch = t.global_batch_size;

  Layout& l = in.layout;
  l.tp = t.topology.tensor_parallel;
  l.ep = t.topology.expert_parallel;
  l.pp = t.topology.pipeline_parallel;
  l.first_stage_layers = t.decoder_first_pipeline_num_layers;
  l.last_stage_layers = t.decoder_last_pipeline_num_layers;
  l.micro_batch = t.micro_batch_size;
  l.schedule = t.schedule;
  l.recompute = t.recompute.granularity;
  l.recompute_method = t.recompute.method;
  l.recompute_num_layers = t.recompute.num_layers;
  MT_CHECK(o.num_gpus >= 0, "--num-gpus must be >= 0, got {}", o.num_gpus);
  if (o.search) {
    MT_CHECK(o.num_gpus > 0, "--search needs --num-gpus (the GPUs to lay the model out on)");
    MT_CHECK(!o.gpu.empty(), "--search needs --gpu (the memory a layout must fit in)");
    MT_CHECK(o.search_max_tp >= 0, "--search-max-tp must be >= 0, got {}", o.search_max_tp);
    MT_CHECK(o.search_max_micro_batch_size >= 1, "--search-max-micro-batch-size must be >= 1, got {}",
             o.search_max_micro_batch_size);
    l = Layout{1, 1, o.num_gpus, 1, 0, 0, 1, Recompute::None, RecomputeMethod::Uniform, 1, l.schedule};
  } else {
    MT_CHECK(l.tp >= 1, "--tensor-model-parallel-size must be >= 1, got {}", l.tp);
    MT_CHECK(l.pp >= 1, "--pipeline-model-parallel-size must be >= 1, got {}", l.pp);
    const int replica = l.tp * l.pp;
    const int gpus = o.num_gpus > 0 ? o.num_gpus : replica;
    MT_CHECK(gpus % replica == 0,
             "--num-gpus {} is not divisible by --tensor-model-parallel-size {} x "
             "--pipeline-model-parallel-size {}",
             gpus, l.tp, l.pp);
    l.dp = gpus / replica;
    MT_CHECK(l.ep >= 1 && l.dp % l.ep == 0 && in.model.num_experts % l.ep == 0,
             "--expert-model-parallel-size {} must divide the data-parallel size {} and --num-experts {}", l.ep,
             l.dp, in.model.num_experts);
    tp_shape(in.model, 0, l.tp);
    check_layout(t, l.dp);
  }

  if (!o.gpu.empty()) in.gpu = find_gpu(o.gpu);
  const std::string precision = o.precision.empty() ? (in.gpu || o.train.bf16 ? "bf16" : "fp32") : o.precision;
  MT_CHECK(precision == "fp32" || precision == "bf16", "--precision must be fp32 or bf16, got '{}'", precision);
  MT_CHECK(!o.train.bf16 || precision == "bf16", "--bf16 trains in bf16, but --precision is {}", precision);
  in.precision = precision == "bf16" ? Precision::BF16 : Precision::FP32;
  MT_CHECK(o.compute_efficiency > 0 && o.compute_efficiency <= 1,
           "--compute-efficiency must be in (0, 1], got {}", o.compute_efficiency);
  MT_CHECK(o.mfu >= 0 && o.mfu <= 1, "--mfu must be in [0, 1] (0: estimate it), got {}", o.mfu);
  MT_CHECK(o.gpu_hour_cost >= 0, "--gpu-hour-cost must be >= 0, got {}", o.gpu_hour_cost);
  MT_CHECK(o.train_tokens >= 0, "--train-tokens must be >= 0, got {}", o.train_tokens);
  in.compute_efficiency = o.compute_efficiency;
  in.mfu = o.mfu;
  in.gpu_hour_cost = o.gpu_hour_cost;
  in.train_tokens = o.train_tokens;
  return in;
}

ParameterCounts count_parameters(const ModelConfig& c) {
  ParameterCounts p;
  for (const ParamTensor& t : param_table(c)) {
    const int64_t n = int64_t(t.numel);
    const std::string& name = t.name;
    p.total += n;
    if (name == "embed" || name == "lm_head") p.embedding += n;
    else if (is_expert_tensor(name)) p.experts += n;
    else if (t.is_norm) p.norms += n;
    else if (name.size() > 7 && name.substr(name.size() - 7) == "/router") p.router += n;
    else p.attention += n;  // wq, wk, wv, wo
  }
  p.per_expert = p.experts / c.num_experts;
  p.shared = p.total - p.experts;
  p.active = p.shared + int64_t(c.router_topk) * p.per_expert;
  // The model's own counts (model/config.cpp) must agree with its table.
  MT_CHECK(p.total == c.num_parameters() && p.active == c.num_active_parameters(),
           "parameter table ({} total, {} active) disagrees with ModelConfig ({}, {})", p.total, p.active,
           c.num_parameters(), c.num_active_parameters());
  return p;
}

std::vector<double> pipeline_idle(const std::vector<double>& slot, int64_t micro_batches) {
  double max = 0, sum = 0;
  for (double x : slot) max = std::max(max, x), sum += x;
  std::vector<double> idle(slot.size(), 0.0);
  if (sum <= 0) return idle;
  const double step = double(micro_batches - 1) * max + sum;
  for (size_t s = 0; s < slot.size(); ++s) idle[s] = 1.0 - double(micro_batches) * slot[s] / step;
  return idle;
}

double pipeline_bubble(const std::vector<double>& slot, int64_t micro_batches) {
  const std::vector<double> idle = pipeline_idle(slot, micro_batches);
  double sum = 0;
  for (double x : idle) sum += x;
  return idle.empty() ? 0.0 : sum / double(idle.size());
}

PlanResult make_plan(const PlanInputs& in) {
  const std::vector<StageSpan> spans = stage_spans(in.model, in.layout);
  return plan_with_counts(in, count_parameters(in.model), rank_counts(in.model, in.layout.tp, spans, in.layout.ep),
                          spans);
}

namespace {

// Where PP does not divide the layers: middle stages of ceil(L / PP) layers,
// the first and last sharing the rest. Sets the layout's first and last
// stage sizes; returns why the layers do not split, or "".
std::string uneven_stage_split(const ModelConfig& c, Layout& l) {
  l.first_stage_layers = l.last_stage_layers = 0;
  if (c.num_layers % l.pp == 0 || l.pp < 2) return "";
  const int middle = (c.num_layers + l.pp - 1) / l.pp;
  const int ends = c.num_layers - (l.pp - 2) * middle;
  if (ends < 2)
    return fmt::format("--num-layers {} does not split over {} stages ({} middle stages of {} layers leave {} "
                       "for the first and last)",
                       c.num_layers, l.pp, l.pp - 2, middle, ends);
  l.first_stage_layers = ends / 2;
  l.last_stage_layers = ends - ends / 2;
  return "";
}

// One layout under the cost model (never an assumed MFU), kept or dropped
// for memory.
SearchCandidate evaluate_layout(const PlanInputs& base, const Layout& l, const ParameterCounts& params,
                                const std::vector<RankCounts>& counts, const std::vector<StageSpan>& spans) {
  PlanInputs in = base;
  in.layout = l;
  in.mfu = 0;
  in.train_tokens = 0;  // no run length needed
  const PlanResult p = plan_with_counts(in, params, counts, spans);
  const RankMemory& big = p.ranks[size_t(p.largest_rank)];
  SearchCandidate cand;
  cand.layout = l;
  cand.memory = big.total();
  cand.step_s = p.timing->step_s;
  cand.tokens_per_s = p.timing->tokens_per_s;
  cand.mfu = p.timing->mfu;
  cand.bubble = p.bubble_fraction;
  if (!p.fits) {
    cand.drop = Drop::Memory;
    cand.dropped = fmt::format("needs {:.1f} GB on TP rank {} of stage {} (weights {:.1f}, gradients {:.1f}, "
                               "optimizer {:.1f}, activations {:.1f}), the GPU has {:.1f} GB",
                               big.total() / 1e9, big.tp, big.pp, big.weights / 1e9, big.gradients / 1e9,
                               big.optimizer / 1e9, big.activations / 1e9, p.memory_capacity / 1e9);
  }
  return cand;
}

// The message of the error fn throws, or "" when it passes.
template <typename F>
std::string problem_of(F&& fn) {
  try {
    fn();
    return "";
  } catch (const Error& e) {
    return error_text(e);
  }
}

}  // namespace

SearchResult search_layouts(const PlanInputs& base, int max_tp, int max_micro_batch) {
  const ModelConfig& c = base.model;
  const int gpus = base.num_gpus();
  const ParameterCounts params = count_parameters(c);
  SearchResult out;
  auto keep_or_drop = [&](SearchCandidate cand) {
    (cand.drop == Drop::Kept ? out.kept : out.dropped).push_back(std::move(cand));
  };
  auto drop = [&](const Layout& l, Drop kind, std::string why) {
    keep_or_drop(SearchCandidate{.layout = l, .drop = kind, .dropped = std::move(why)});
  };
  for (int tp = 1; tp <= std::min(max_tp, gpus); ++tp) {
    if (gpus % tp != 0) continue;
    Layout l = base.layout;
    l.tp = tp;
    l.pp = 1;
    l.dp = gpus / tp;
    if (std::string why = problem_of([&] { for (int r = 0; r < tp; ++r) tp_shape(c, r, tp); }); !why.empty()) {
      drop(l, Drop::TensorParallel, why);
      continue;
    }
    for (int pp = 1; pp <= std::min(c.num_layers, gpus / tp); ++pp) {
      if ((gpus / tp) % pp != 0) continue;
      l.pp = pp;
      l.dp = gpus / (tp * pp);
      l.micro_batch = 1;
      l.recompute = Recompute::None;
      std::vector<StageSpan> spans;
      std::string why = uneven_stage_split(c, l);
      if (why.empty()) why = problem_of([&] { spans = stage_spans(c, l); });
      if (!why.empty()) {
        drop(l, Drop::StageSplit, why);
        continue;
      }
      if (base.global_batch % l.dp != 0) {
        drop(l, Drop::BatchSplit, fmt::format("--global-batch-size {} is not divisible by DP", base.global_batch));
        continue;
      }
      const int64_t per_replica = base.global_batch / l.dp;
      for (int ep = 1; ep <= (c.is_moe() ? l.dp : 1); ++ep) {
        if (l.dp % ep != 0 || c.num_experts % ep != 0) continue;
        l.ep = ep;
        const std::vector<RankCounts> counts = rank_counts(c, tp, spans, ep);
        for (int b = 1; b <= std::min<int64_t>(max_micro_batch, per_replica); ++b) {
          if (per_replica % b != 0) continue;
          l.micro_batch = b;
          if (std::string batch_why =
                  problem_of([&] { data::BatchSchedule(base.global_batch, b, l.dp, base.rampup); });
              !batch_why.empty()) {
            drop(l, Drop::BatchSplit, batch_why);
            continue;
          }
          for (Recompute rc : {Recompute::None, Recompute::Selective, Recompute::Full}) {
            l.recompute = rc;
            keep_or_drop(evaluate_layout(base, l, params, counts, spans));
          }
        }
      }
      l.ep = 1;
    }
  }
  std::stable_sort(out.kept.begin(), out.kept.end(), [](const SearchCandidate& a, const SearchCandidate& b) {
    if (a.tokens_per_s != b.tokens_per_s) return a.tokens_per_s > b.tokens_per_s;
    return a.memory < b.memory;
  });
  return out;
}

}  // namespace mt
