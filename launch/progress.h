// The progress line of each log interval and the JSON-lines metrics file.
#pragma once

#include <nlohmann/json.hpp>

#include <chrono>
#include <fstream>
#include <string>

namespace mt {

struct StepMetrics {
  int64_t step = 0, total_steps = 0;  // total_steps 0: the run is counted in samples
  double loss = 0, aux_loss = 0, lr = 0, grad_norm = 0;
  int64_t global_batch = 0, global_batch_tokens = 0, consumed_samples = 0, total_samples = 0;
  double tokens_per_s = 0, gflops_per_s = 0;  // over the log interval
  double elapsed_s = 0, eta_s = 0;
  // Tensor-parallel all-reduces over the interval (0 on one rank).
  double tp_allreduce_s = 0, tp_allreduce_bytes = 0, interval_s = 0;
  // ZeRO-1 over the interval (0 on one replica): time waiting for the
  // gradient reduce-scatter after the backward pass (what overlap did not
  // hide), time in the parameter all-gather, and their bytes.
  double dp_exposed_s = 0, dp_allgather_s = 0, dp_reduce_scatter_bytes = 0, dp_allgather_bytes = 0;
  double dp_hidden_bytes = 0;  // reduce-scattered before the backward pass ended
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
