#include "training/progress.h"

#include <fmt/format.h>

#include <cmath>

#include "runtime/check.h"

namespace mt {

std::string format_duration(double seconds) {
  const int64_t s = int64_t(std::max(0.0, seconds));
  return fmt::format("{}:{:02d}:{:02d}", s / 3600, s / 60 % 60, s % 60);
}

std::string progress_line(const StepMetrics& m) {
  const std::string step = m.total_steps > 0 ? fmt::format("step {:>6}/{}", m.step, m.total_steps)
                                             : fmt::format("step {:>6} ({}/{} samples)", m.step,
                                                           m.consumed_samples, m.total_samples);
  return fmt::format(
      "{} | loss {:.4f} | aux {:.4f}{} | lr {:.3e} | grad norm {:.3f} | batch {} seq "
      "({} tok) | {:.0f} tok/s | {:.1f} GFLOP/s, MFU {:.1f}% | elapsed {} | eta {}",
      step, m.loss, m.aux_loss, m.z_loss > 0 ? fmt::format(" | z {:.4f}", m.z_loss) : std::string(), m.lr, m.grad_norm, m.global_batch,
      m.global_batch_tokens, m.tokens_per_s, m.gflops_per_s, 100.0 * m.mfu, format_duration(m.elapsed_s),
      format_duration(m.eta_s)) +
         (m.skipped_steps > 0 ? fmt::format(" | {} skipped", m.skipped_steps) : std::string()) +
         (m.tp_allreduce_s > 0 ? fmt::format(" | TP all-reduce {:.0f}% of time", 100.0 * m.tp_allreduce_s / m.interval_s)
                               : std::string()) +
         (m.tp_sp_s > 0 ? fmt::format(" | TP reduce-scatter/all-gather {:.0f}% of time", 100.0 * m.tp_sp_s / m.interval_s)
                        : std::string()) +
         (m.dp_reduce_scatter_bytes > 0
              ? fmt::format(" | DP grad wait {:.0f}% ({:.0f}% hidden), all-gather {:.0f}% of time",
                            100.0 * m.dp_exposed_s / m.interval_s,
                            100.0 * m.dp_hidden_bytes / m.dp_reduce_scatter_bytes,
                            100.0 * m.dp_allgather_s / m.interval_s)
              : std::string()) +
         (m.ep_alltoall_bytes > 0
              ? fmt::format(" | EP all-to-all {:.0f}% of time", 100.0 * m.ep_alltoall_s / m.interval_s)
              : std::string());
}

nlohmann::json to_json(const StepMetrics& m) {
  nlohmann::json j = nlohmann::json::object();
#define MT_METRIC_JSON(type, name, meaning) j[#name] = m.name;
  MT_STEP_METRICS(MT_METRIC_JSON)
#undef MT_METRIC_JSON
  return j;
}

MetricsWriter::MetricsWriter(const std::string& path) {
  if (path.empty()) return;
  out_.open(path, std::ios::app);
  MT_CHECK(out_.is_open(), "cannot open metrics file {}", path);
}

void MetricsWriter::write(const nlohmann::json& record) {
  if (!out_.is_open()) return;
  out_ << record.dump() << "\n";
  out_.flush();
}

}  // namespace mt
