// The progress line of each log interval and the JSON-lines metrics file.
#pragma once

#include <nlohmann/json.hpp>

#include <chrono>
#include <fstream>
#include <string>

namespace mt {

// One row a metric of a log interval: type, name (the member, and the key
// in the metrics file), meaning. The struct and its JSON come from these rows.
#define MT_STEP_METRICS(X)                                                                               \
  X(int64_t, step, "optimizer steps done")                                                               \
  X(int64_t, total_steps, "--train-iters; 0: the run is counted in samples")                             \
  X(double, loss, "mean CE over the interval's steps")                                                   \
  X(double, aux_loss, "mean load-balancing loss over the interval's steps")                              \
  X(double, z_loss, "mean router z-loss over the interval's steps (0 without --moe-z-loss-coeff)")       \
  X(double, lr, "learning rate of the last step")                                                        \
  X(int64_t, skipped_steps, "steps of the interval skipped without an update (training/step_guard.h)")      \
  X(double, grad_norm, "gradient norm of the last step, before clipping")                                \
  X(int64_t, global_batch, "samples of the last step")                                                   \
  X(int64_t, global_batch_tokens, "tokens of the last step")                                             \
  X(int64_t, consumed_samples, "samples consumed by the run so far")                                     \
  X(int64_t, total_samples, "samples the run takes")                                                     \
  X(double, tokens_per_s, "over the interval")                                                           \
  X(double, gflops_per_s, "model FLOPs (ModelConfig::train_flops_per_token) over the interval")          \
  X(double, mfu, "gflops_per_s over the job's matrix-product peak measured at start-up (runtime/matmul_peak.h)") \
  X(double, elapsed_s, "since the first step")                                                           \
  X(double, eta_s, "to total_samples at the interval's rate")                                            \
  X(double, interval_s, "length of the interval")                                                        \
  X(double, tp_allreduce_s, "tensor-parallel all-reduces (0 on one rank)")                               \
  X(double, tp_allreduce_bytes, "their bytes")                                                           \
  X(double, tp_sp_s, "sequence parallelism's reduce-scatters and all-gathers over TP (0 without)")        \
  X(double, tp_sp_bytes, "their bytes: each the whole buffer gathered or scattered")                      \
  X(double, dp_exposed_s, "ZeRO-1: waiting for the reduce-scatter after the backward pass (not hidden)") \
  X(double, dp_allgather_s, "ZeRO-1: the parameter all-gather")                                          \
  X(double, dp_reduce_scatter_bytes, "ZeRO-1 gradient bytes reduce-scattered")                           \
  X(double, dp_allgather_bytes, "ZeRO-1 parameter bytes all-gathered")                                   \
  X(double, dp_hidden_bytes, "reduce-scattered before the backward pass ended")                          \
  X(double, ep_alltoall_s, "expert parallelism: this rank's token all-to-alls (0 without EP)")            \
  X(double, ep_alltoall_bytes, "bytes (rows and row counts) this rank sent to the other ranks of its EP group")

struct StepMetrics {
#define MT_METRIC_MEMBER(type, name, meaning) type name = 0;
  MT_STEP_METRICS(MT_METRIC_MEMBER)
#undef MT_METRIC_MEMBER
};

// Formats seconds as H:MM:SS.
std::string format_duration(double seconds);
std::string progress_line(const StepMetrics& m);
nlohmann::json to_json(const StepMetrics& m);

// Appends one JSON object a line; the file is opened once (an empty path
// writes nothing).
class MetricsWriter {
 public:
  explicit MetricsWriter(const std::string& path);
  void write(const nlohmann::json& record);

 private:
  std::ofstream out_;
};

}  // namespace mt
