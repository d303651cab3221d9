#include "planner/cost_model.h"

#include <algorithm>
#include <cmath>

namespace mt {

namespace {

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

}  // namespace

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
  // TP collectives of one micro-batch (every TP rank takes part in each),
  // as model/transformer.cpp runs them. Per layer, forward, the attention
  // and FFN outputs (the FFN's: the routed experts' and the gated shared
  // expert's partial sums at once), backward, the gradients of the FFN's
  // and the attention's inputs: all-reduces of T d activations; or, under
  // sequence parallelism, forward an all-gather of each norm's output
  // before the products and a reduce-scatter of each output, backward
  // all-gathers of the output gradient, mlp_norm's output, the attention
  // block's output gradient and attn_norm's output, and reduce-scatters of
  // the two input gradients: T d each (the whole buffer gathered or
  // scattered). A layer full recompute rebuilds runs its forward's again.
  // The embedding's output (a reduce-scatter under SP, whose backward
  // all-gathers the residual's gradient) on the first stage; on the last
  // the LM head's input gradient (under SP: the final norm's output
  // all-gathered forward and again backward, the gradient
  // reduce-scattered) and the vocab-parallel cross-entropy's row max and
  // sums (3 T, fp32). Per MoE layer the routing weights' gradient (T K,
  // fp32) and, with --moe-shared-expert-gate, the gate's dot(dout, s)
  // (T, fp32), all-reduced with or without SP. Once a step: the gradients
  // TP ranks hold partial sums of (under SP every norm gain's too), and the
  // gradient norm.
  const StageMlps mlps = stage_mlps(c, span);
  const std::vector<RecomputeGroup> groups =
      recompute_groups({l.recompute, l.recompute_method, l.recompute_num_layers}, cost.layers);
  double forwards = 0, moe_forwards = 0;  // layer forward passes, of which MoE layers'
  for (int i = 0; i < cost.layers; ++i) {
    const double passes = groups[size_t(i)].recomputed ? 2.0 : 1.0;
    forwards += passes;
    if (c.is_moe_layer(span.begin + i)) moe_forwards += passes;
  }
  const bool sp = l.seq_split() > 1;
  if (l.tp > 1) {
    const double act = mb.activation_bytes;
    const double per_moe_layer = mb.tokens * c.router_topk * 4.0 +
                                 (c.shared_expert_size > 0 && c.shared_expert_gate ? mb.tokens * 4.0 : 0.0);
    const double head = span.last ? 3.0 * mb.tokens * 4.0 : 0.0;
    if (sp) {
      cost.tp_bytes = mlps.moe_layers * per_moe_layer + head;
      cost.tp_sp_bytes = (4.0 * forwards + 6.0 * cost.layers) * act + (span.first ? 2.0 * act : 0.0) +
                         (span.last ? 3.0 * act : 0.0);
    } else {
      cost.tp_bytes = (2.0 * forwards + 2.0 * cost.layers) * act + mlps.moe_layers * per_moe_layer +
                      (span.first ? act : 0.0) + (span.last ? act : 0.0) + head;
    }
    cost.tp_sent_bytes = cost.tp_bytes * ring_share(l.tp) + cost.tp_sp_bytes * ring_share(l.tp) / 2.0;
    const RankCounts& rc = counts[size_t(stage) * l.tp];
    cost.tp_once_bytes = double(sp ? rc.sp_partial_grad : rc.partial_grad) * bytes.gradients + 8.0;
  }
  cost.pp_sent_bytes = (stage < l.pp - 1 ? mb.boundary_bytes : 0.0) + (stage > 0 ? mb.boundary_bytes : 0.0);
  // Only MoE layers dispatch: a dense layer's MLP (and the shared expert)
  // run on the rank's own tokens.
  if (l.ep > 1 && mlps.moe_layers > 0) {
    const double away = double(l.ep - 1) / l.ep;  // of the rows, to experts on other ranks
    const double rows = away * mb.tokens * c.router_topk * c.hidden_size * bytes.activation;
    const double counts = (l.ep - 1) * (c.num_experts / l.ep) * 4.0;  // each forward exchanges them
    // x out, y back each forward; dy out, dx back
    cost.ep_sent_bytes = (2.0 * moe_forwards + 2.0 * mlps.moe_layers) * rows + moe_forwards * counts;
  }
  return cost;
}

void plan_communication(PlanResult& r) {
  const Layout& l = r.inputs.layout;
  const double micro_batches = double(r.micro_batches);
  for (StageCost& sc : r.stages) {
    sc.tp_step_bytes = micro_batches * sc.tp_bytes + sc.tp_once_bytes;
    sc.tp_sp_step_bytes = micro_batches * sc.tp_sp_bytes;
    r.comm.tp_bytes = std::max(r.comm.tp_bytes, sc.tp_step_bytes);
    r.comm.tp_sp_bytes = std::max(r.comm.tp_sp_bytes, sc.tp_sp_step_bytes);
    r.comm.tp_sent_bytes = std::max(r.comm.tp_sent_bytes, micro_batches * sc.tp_sent_bytes +
                                                              sc.tp_once_bytes * ring_share(l.tp));
    r.comm.pp_sent_bytes = std::max(r.comm.pp_sent_bytes, micro_batches * sc.pp_sent_bytes);
  }
  for (const StageCost& sc : r.stages)
    r.comm.ep_sent_bytes = std::max(r.comm.ep_sent_bytes, micro_batches * sc.ep_sent_bytes);
  for (const RankMemory& rm : r.ranks) r.comm.dp_sent_bytes = std::max(r.comm.dp_sent_bytes, rm.dp_sent_bytes);
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

void set_pipeline_idle(PlanResult& r, const std::vector<double>& slot) {
  r.bubble_fraction = pipeline_bubble(slot, r.micro_batches);
  const std::vector<double> idle = pipeline_idle(slot, r.micro_batches);
  for (size_t s = 0; s < idle.size(); ++s) r.stages[s].idle = idle[s];
}

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
    const double pp_s = l.pp > 1 ? 2.0 * mb.boundary_bytes / pp_bandwidth : 0.0;
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
  r.comm.pp_s = l.pp > 1 ? micro_batches * 2.0 * mb.boundary_bytes / pp_bandwidth : 0.0;
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

}  // namespace mt
