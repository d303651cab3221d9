// The parts of the cost model (planner/plan.h) that its files share:
// parameter_counts.cpp (what each rank holds), memory_model.cpp (bytes a
// rank needs), timing.cpp (work, communication and time of a step),
// plan.cpp (one layout's plan) and layout_search.cpp (--search).
#pragma once

#include <string>
#include <vector>

#include "model/parameters.h"
#include "planner/plan.h"

namespace mt {

// --- parameter_counts.cpp ---------------------------------------------------
// The stage spans of a layout, as `train` makes them.
std::vector<StageSpan> stage_spans(const ModelConfig& c, const Layout& l);

// The kinds of MLP among layers [begin, end) of the model: dense (a dense
// model's, or a dense layer of --moe-layer-freq) and MoE.
struct StageMlps {
  int dense_layers = 0, moe_layers = 0;
};
StageMlps stage_mlps(const ModelConfig& c, const StageSpan& span);

// What one (TP rank, stage) holds, from the same param_table `train` builds
// its buffers from.
struct RankCounts {
  int64_t parameters = 0;
  int64_t expert_parameters = 0;  // of its experts (every MoE layer's E/EP)
  // Weights one token's forward multiplies: the routed experts' tensors at
  // K/E of their size (a token visits K of the E experts; a dense layer's
  // MLP and the shared expert whole), no embedding (a lookup).
  double active_weights = 0;
  int64_t partial_grad = 0;  // elements whose gradient is summed over TP once a step
  // The same under sequence parallelism, where every norm gain's gradient
  // is partial too (mark_sequence_parallel_grads).
  int64_t sp_partial_grad = 0;
  // Elements of its largest GradUnit (a layer, the embedding, or the final
  // norm with the LM head): --grad-reduce-in-bf16's float32 scratch.
  int64_t largest_grad_unit = 0;
};

// counts[stage * tp + tp_rank]. One table of the whole model per TP rank,
// each tensor counted on the stage whose span holds it: the same tensors as
// param_table(cfg, tp_rank, tp, span) of each stage, without building a
// table per stage (the search looks at thousands of layouts).
// Under EP every EP rank holds as many experts: EP rank 0 stands for all.
std::vector<RankCounts> rank_counts(const ModelConfig& c, int tp, const std::vector<StageSpan>& spans, int ep = 1);

FlopCounts count_flops(const ModelConfig& c, const ParameterCounts& params, Recompute recompute);

// --- plan.cpp -----------------------------------------------------------------
// What the parts below share about one micro-batch.
struct MicroBatch {
  double tokens;            // T = micro-batch x S
  double activation_bytes;  // T d activations: a layer's output, a stage's input
  // The residual stream's rows on a TP rank, T / TP under sequence
  // parallelism (T otherwise), and their T_r d activations: what the stage
  // boundary carries.
  double rows, boundary_bytes;
};
MicroBatch micro_batch_of(const PlanInputs& in, const BytesPerParameter& bytes);

// Ring all-reduce: what each GPU sends, as a share of the payload. A ring
// reduce-scatter or all-gather sends half of that, (group-1)/group of the
// buffer gathered or scattered.
inline double ring_share(int group) { return group > 1 ? 2.0 * (group - 1) / group : 0.0; }

// K and V of one token in one layer, per kv head, at fp16.
constexpr double kv_bytes_per_token_head(double head_dim) { return 2.0 * head_dim * 2.0; }

// Every (TP rank, stage)'s memory and every stage's work, the step's
// communication and time, from the counts of rank_counts.
PlanResult plan_with_counts(const PlanInputs& in, const ParameterCounts& params,
                            const std::vector<RankCounts>& counts, const std::vector<StageSpan>& spans);

// --- memory_model.cpp ---------------------------------------------------------
// The bytes one (TP rank, stage) holds: weights, gradients, optimizer state
// of its parameters, the activations of its live micro-batches and the
// model's work space, each activation and work buffer as the Transformer
// allocates it.
RankMemory rank_memory(const PlanInputs& in, const BytesPerParameter& bytes, const RankCounts& rc,
                       const StageSpan& span, int tp_rank, int stage, int live_micro_batches);

// Serving memory: weights at fp16/fp8, the KV cache at fp16.
void plan_serving_memory(PlanResult& r);

// --- timing.cpp ---------------------------------------------------------------
// One stage's work for one micro-batch on its busiest TP rank, and its
// communication.
StageCost stage_cost(const PlanInputs& in, const BytesPerParameter& bytes, const std::vector<RankCounts>& counts,
                     const StageSpan& span, int stage);

// The bytes of a step, the busiest GPU of each kind of group.
void plan_communication(PlanResult& r);

void set_pipeline_idle(PlanResult& r, const std::vector<double>& slot);

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

StepTimeModel plan_step_time(PlanResult& r, const GpuSpec& g);

Timing plan_timing(const PlanResult& r, const StepTimeModel& model, const GpuSpec& g);

// Seconds to train on --train-tokens: the ramp-up's smaller batches step by
// step (more bubble under the cost model; the same tokens/s under an
// assumed MFU), then the rest at the full batch.
double training_seconds(const PlanResult& r, const StepTimeModel& model, const Timing& tm, const GpuSpec& g);

// Serving at batch 1: each token reads every stage's active weights and its
// KV cache once, stage after stage; TP ranks read their shards at once.
// Sequences a GPU holds: fp16 weights, the rest of its memory for KV.
void plan_serving_speed(PlanResult& r, const std::vector<RankCounts>& counts, const GpuSpec& g);

}  // namespace mt
