#include "planner/cost_model.h"

#include <algorithm>

namespace mt {

namespace {

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

}  // namespace

std::string to_string(Precision p) { return p == Precision::BF16 ? "bf16" : "fp32"; }

BytesPerParameter bytes_per_parameter(Precision p, bool grads_in_bf16) {
  if (p == Precision::BF16) return grads_in_bf16 ? BytesPerParameter{2, 2, 2, 12, 2, 4, 4} : BytesPerParameter{2, 4, 4, 12, 2};
  return {4, 4, 4, 8, 4};
}

MicroBatch micro_batch_of(const PlanInputs& in, const BytesPerParameter& bytes) {
  const double tokens = double(in.layout.micro_batch) * double(in.model.seq_length);
  const double rows = tokens / in.layout.seq_split();
  return {tokens, tokens * in.model.hidden_size * bytes.activation, rows,
          rows * in.model.hidden_size * bytes.activation};
}

PlanResult plan_with_counts(const PlanInputs& in, const ParameterCounts& params,
                            const std::vector<RankCounts>& counts, const std::vector<StageSpan>& spans) {
  const ModelConfig& c = in.model;
  const Layout& l = in.layout;
  PlanResult r;
  r.inputs = in;
  r.bytes = bytes_per_parameter(in.precision, l.grads_in_bf16);
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

PlanResult make_plan(const PlanInputs& in) {
  const std::vector<StageSpan> spans = stage_spans(in.model, in.layout);
  return plan_with_counts(in, count_parameters(in.model), rank_counts(in.model, in.layout.tp, spans, in.layout.ep),
                          spans);
}

}  // namespace mt
