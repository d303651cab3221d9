// `moetrain plan`: the layout and cost model. From the model, the layout and
// a cluster description it gives parameter counts, FLOPs, per-GPU memory,
// the pipeline bubble, communication, step time and the cost of a run, and
// serving figures, without running the model. Pure functions: plain structs
// in, plain structs out; launch/plan_command.cpp turns the flags into
// PlanInputs and prints the results. The formulas and their sources are in
// docs/planning.md.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "data/batch_schedule.h"
#include "model/config.h"
#include "model/recompute.h"
#include "parallel/pipeline_schedule.h"
#include "planner/gpu_specs.h"

namespace mt {

enum class Precision { FP32, BF16 };
using Recompute = RecomputeGranularity;

std::string to_string(Precision p);

struct Layout {
  int tp = 1, pp = 1, dp = 1;
  int ep = 1;  // experts split over EP ranks of DP (docs/design.md section 10)
  int first_stage_layers = 0, last_stage_layers = 0;  // 0: an even split
  int micro_batch = 1;
  Recompute recompute = Recompute::None;
  RecomputeMethod recompute_method = RecomputeMethod::Uniform;  // of full recompute
  int recompute_num_layers = 1;
  PipelineSchedule schedule = PipelineSchedule::OneFOneB;
  // --sequence-parallel: the residual stream's rows split over TP (a no-op
  // at TP 1; docs/design.md section 4.1).
  bool sequence_parallel = false;
  // The rows of the residual stream a TP rank holds are T / seq_split().
  int seq_split() const { return sequence_parallel && tp > 1 ? tp : 1; }
  // --grad-reduce-in-bf16: gradients accumulated and reduced in bf16 (bf16
  // precision only; docs/design.md section 8).
  bool grads_in_bf16 = false;
};

// Everything the cost model reads, resolved and checked.
struct PlanInputs {
  ModelConfig model;  // vocabulary resolved
  Layout layout;
  int64_t global_batch = 1;  // samples a step (after any ramp-up)
  data::RampupConfig rampup;
  std::optional<GpuSpec> gpu;
  Precision precision = Precision::FP32;
  double compute_efficiency = 0.6;
  double mfu = 0.0;  // 0: estimated
  double gpu_hour_cost = 0.0;
  double train_tokens = 0.0;
  int num_gpus() const { return layout.tp * layout.pp * layout.dp; }
};

// Bytes a parameter element costs: weights and gradients on every rank,
// the reduce-scattered gradient shard and the optimizer state over DP.
struct BytesPerParameter {
  double weights = 4, gradients = 4, gradient_shard = 4, optimizer = 8;
  double activation = 4;  // one activation element
  // --grad-reduce-in-bf16: the shard widened to float32 (every rank), and
  // one GradUnit's float32 gradients (per element of the largest unit).
  double widened_shard = 0, unit_gradients = 0;
};
// fp32 (the CPU build): weights are the master copy, Adam's two moments.
// bf16 (Megatron mixed precision): bf16 weights and activations, fp32
// gradients, fp32 master weights + exp_avg + exp_avg_sq; with grads_in_bf16,
// bf16 gradients and their shard, beside the float32 widened shard and unit
// (docs/design.md section 8).
BytesPerParameter bytes_per_parameter(Precision p, bool grads_in_bf16 = false);

struct ParameterCounts {
  int64_t total = 0, active = 0;  // active: what one token passes through
  int64_t embedding = 0;          // embed + lm_head
  int64_t attention = 0;          // wq, wk, wv, wo
  int64_t router = 0, norms = 0;  // norms: attn_norm, mlp_norm (q_norm, k_norm), final_norm
  int64_t dense_mlp = 0;          // the dense layers' MLPs, mlp/w1, w2 (w3): every layer of a dense model
  int64_t shared_experts = 0;     // the MoE layers' shared experts, shared_expert/w1, w2 (w3), gate
  int64_t experts = 0;            // every routed expert's w1, w2 (w3)
  int64_t per_expert = 0;         // one routed expert's over the MoE layers
  int64_t shared = 0;             // everything but the routed experts: every token passes through it
};
ParameterCounts count_parameters(const ModelConfig& cfg);

struct FlopCounts {             // per token
  double forward_2n = 0;        // 2 x active parameters (the usual 2N rule)
  double dense_forward_2n = 0;  // 2 x total: a dense model of the same size
  double forward = 0;           // train / 3: products of the active weights (the embedding is a
                                // lookup) + attention scores, 4 S H hd a layer
  double train = 0;             // ModelConfig::train_flops_per_token(): the model FLOPs of MFU
  double train_with_recompute = 0;  // what the GPUs run: + the recomputed forward
};

// One (TP rank, stage): every DP replica holds the same. Bytes per GPU.
struct RankMemory {
  int tp = 0, pp = 0;
  int layer_begin = 0, layer_end = 0;
  int64_t parameters = 0;         // elements held (param_table of the rank)
  int64_t expert_parameters = 0;  // of which its experts' (E/EP of every MoE layer's)
  // Rounded up for ZeRO-1's equal shards: to a multiple of DP, or under EP
  // the shared tensors to DP and the experts to DP/EP (lay_out_regions).
  int64_t padded_parameters = 0;
  int64_t shard_parameters = 0;   // this rank's ZeRO-1 shard (all of it at DP 1)
  double weights = 0, gradients = 0, optimizer = 0;
  int live_micro_batches = 0;     // at the schedule's peak
  // Bytes under one recompute setting, as `train` prints them: one
  // micro-batch's activation slot (Transformer::activation_bytes), the
  // slots of the live micro-batches, and the rest the model holds beside
  // its parameters and slots (Transformer::workspace_bytes: the backward
  // pass's gradients, recompute's rebuilt layers, the MLPs' and experts'
  // work space, sequence parallelism's gathered rows).
  struct Held {
    double per_micro_batch = 0, activations = 0, workspace = 0;
    double total() const { return activations + workspace; }
  };
  Held none, selective, full;
  // At the layout's recompute.
  double activations_per_micro_batch = 0;
  double activations = 0;         // live_micro_batches x activations_per_micro_batch
  double workspace = 0;
  // ZeRO-1's payload each step (0 at DP 1): the gradient buffer
  // reduce-scattered, the updated weights all-gathered (the experts over
  // expert-DP under EP); what this GPU sends of them in rings.
  double dp_reduce_scatter_bytes = 0, dp_all_gather_bytes = 0, dp_sent_bytes = 0;
  // The experts' row buffers hold expert_rows_bound rows (model/router.h).
  int64_t expert_rows = 0;
  // What routing keeps of the stage's MoE layers between steps, outside the
  // parameters (RouterState, model/router.h): the expert bias
  // (--moe-router-enable-expert-bias, float32 [E]), global_aux_loss's shares
  // and the step's counts; no gradient, no optimizer state.
  double router_state = 0;
  double total() const { return weights + gradients + optimizer + activations + workspace + router_state; }
};

// One pipeline stage's work for one micro-batch, on one GPU.
struct StageCost {
  int stage = 0, layers = 0;
  double forward_flops = 0;  // the busiest TP rank's forward
  double compute_flops = 0;  // forward + backward (+ recompute)
  double tp_bytes = 0;       // all-reduce payload (sum of message sizes)
  // Sequence parallelism's reduce-scatters and all-gathers over TP: the
  // payload, each the whole [T, d] buffer gathered or scattered (what
  // `train` reports as tp_sp_bytes). 0 without it.
  double tp_sp_bytes = 0;
  double tp_once_bytes = 0;  // once a step: the gradients TP ranks hold partial sums of, and the norm
  double tp_step_bytes = 0;  // a step's all-reduce payload: every micro-batch's, and the once-a-step reductions
  double tp_sp_step_bytes = 0;  // a step's reduce-scatter and all-gather payload
  // Sent by one GPU: a ring all-reduce sends 2 (t-1)/t of its payload, a
  // reduce-scatter or all-gather (t-1)/t.
  double tp_sent_bytes = 0;
  double pp_sent_bytes = 0;  // activations forward and gradients backward (T d / t each under SP)
  // EP all-to-alls of one micro-batch, sent by one GPU to the others of its
  // EP group, with every expert receiving its mean share of the rows: per
  // MoE layer the experts' inputs out and outputs back, forward, and their
  // gradients backward (the forward's again under full recompute), plus
  // the row counts each forward sends (ExpertDispatch::stats counts both).
  double ep_sent_bytes = 0;
  double slot_s = 0;         // compute + TP + PP time (0 without --gpu)
  double idle = 0;           // share of the step this stage waits (pipeline_idle below)
};

struct Communication {  // per step, one GPU, the busiest rank
  double tp_bytes = 0, tp_sent_bytes = 0, pp_sent_bytes = 0, dp_sent_bytes = 0, ep_sent_bytes = 0;
  double tp_sp_bytes = 0;  // sequence parallelism's reduce-scatters and all-gathers (payload)
  std::string tp_link, pp_link, dp_link, ep_link;  // "nvlink" or "network"
  double tp_s = 0, pp_s = 0, dp_s = 0, ep_s = 0;   // with --gpu
};

struct Timing {  // with --gpu
  bool mfu_assumed = false;
  double step_s = 0;          // at the full global batch
  double pipeline_s = 0;      // compute, TP and PP of every slot, bubble included
  double compute_s = 0;       // the busiest stage's products alone
  double dp_s = 0;            // ZeRO-1 reduce-scatter + all-gather, not overlapped
  double estimated_step_s = 0, estimated_mfu = 0;  // the cost model's, whatever --mfu says
  double tokens_per_s = 0, mfu = 0;
  double train_s = 0, gpu_hours = 0, cost = 0;  // for --train-tokens, ramp-up included
};

struct Serving {  // one sequence at a time (batch 1), full context S
  double weights_fp16 = 0, weights_fp8 = 0;  // bytes, the largest GPU
  double kv_per_sequence = 0, kv_per_sequence_mha = 0;  // whole model, fp16, at S tokens
  double kv_per_sequence_per_gpu = 0, kv_per_sequence_per_gpu_mha = 0;
  int64_t sequences_per_gpu = 0;  // fp16 weights, the rest of memory for KV (with --gpu)
  double tokens_per_s_fp16 = 0, tokens_per_s_fp8 = 0;  // memory-bandwidth bound (with --gpu)
};

struct PlanResult {
  PlanInputs inputs;
  BytesPerParameter bytes;
  ParameterCounts params;
  FlopCounts flops;
  int64_t batch_tokens = 0, micro_batches = 0;  // a step at the full batch; per replica
  double tokens_per_expert = 0;                  // routed tokens an expert gets a step
  std::vector<RankMemory> ranks;                 // one per (TP rank, stage), stage-major
  int largest_rank = 0;                          // index into ranks of the largest total
  double memory_capacity = 0;                    // the GPU's, 0 without --gpu
  bool fits = true;
  std::vector<StageCost> stages;
  double bubble_fraction = 0;  // mean idle share of a stage in the pipeline
  Communication comm;
  std::optional<Timing> timing;
  Serving serving;
};

PlanResult make_plan(const PlanInputs& in);

// Each stage's idle share of one step of m micro-batches, for stages that
// take slot[s] a micro-batch (forward + backward): the step takes
// (m - 1) max + sum, of which stage s works m slot[s]. pipeline_bubble is
// their mean: (PP - 1) / (m + PP - 1) for equal stages.
std::vector<double> pipeline_idle(const std::vector<double>& slot, int64_t micro_batches);
double pipeline_bubble(const std::vector<double>& slot, int64_t micro_batches);

// --search: every (TP, PP, DP, EP, micro-batch, recompute) on base's GPU
// count, EP over the divisors of DP that divide E (1 for a dense model).
// PP takes an even split of the layers, or, where PP does not divide them,
// equal middle stages and lighter first and last stages. A layout of TP > 1
// is tried with sequence parallelism off and on (when TP divides S) and
// keeps the faster of the two that fit (Layout::sequence_parallel says which).
enum class Drop {
  Kept,
  TensorParallel,  // TP does not divide heads, F (dense, expert, shared expert), the vocabulary or kv heads
  StageSplit,      // the layers do not split over PP
  BatchSplit,      // the global batch (or a ramp-up size) does not divide by micro-batch x DP
  Memory           // does not fit the GPU
};
struct SearchCandidate {
  Layout layout;
  double memory = 0;  // the largest GPU's bytes
  double step_s = 0, tokens_per_s = 0, mfu = 0, bubble = 0;  // estimated (never --mfu)
  Drop drop = Drop::Kept;
  std::string dropped;  // why it was dropped; empty when kept
};
struct SearchResult {
  std::vector<SearchCandidate> kept;     // fastest first
  std::vector<SearchCandidate> dropped;  // in search order
};
SearchResult search_layouts(const PlanInputs& base, int max_tp, int max_micro_batch);

}  // namespace mt
