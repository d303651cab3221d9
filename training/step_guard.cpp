#include "training/step_guard.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "runtime/check.h"

namespace mt {

StepGuard::StepGuard(const SkipConfig& cfg, const std::string& save_dir, bool root) : cfg_(cfg), root_(root) {
  MT_CHECK(cfg.spike_zscore >= 0, "--skip-spike-zscore must be >= 0 (0: off), got {}", cfg.spike_zscore);
  MT_CHECK(cfg.max_consecutive >= 1, "--max-consecutive-skips must be >= 1, got {}", cfg.max_consecutive);
  if (!save_dir.empty()) log_path_ = (std::filesystem::path(save_dir) / "skipped_steps.jsonl").string();
  if (cfg.steps_file.empty()) return;
  std::ifstream in(cfg.steps_file);
  MT_CHECK(in, "--skip-steps-file {}: cannot open it", cfg.steps_file);
  std::string line;
  for (int n = 1; std::getline(in, line); ++n) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    MT_CHECK(j.is_object() && j.contains("consumed_samples") && j["consumed_samples"].is_number_integer(),
             "--skip-steps-file {} line {}: not a JSON object with an integer \"consumed_samples\"", cfg.steps_file,
             n);
    listed_.insert(j["consumed_samples"].get<int64_t>());
  }
}

std::string StepGuard::verdict(double loss, double grad_norm) const {
  if (!std::isfinite(loss)) return fmt::format("the loss is {}", loss);
  if (!std::isfinite(grad_norm)) return fmt::format("the gradient norm is {}", grad_norm);
  if (cfg_.spike_zscore <= 0 || recent_norms_.size() < kMinAccepted) return "";
  double mean = 0.0, var = 0.0;
  for (double x : recent_norms_) mean += x;
  mean /= double(recent_norms_.size());
  for (double x : recent_norms_) var += (x - mean) * (x - mean);
  const double sd = std::sqrt(var / double(recent_norms_.size() - 1));
  if (sd > 0 && grad_norm > mean + cfg_.spike_zscore * sd)
    return fmt::format("the gradient norm {:.4g} is {:.1f} standard deviations above the mean {:.4g} of the last {} "
                       "steps (--skip-spike-zscore {})",
                       grad_norm, (grad_norm - mean) / sd, mean, recent_norms_.size(), cfg_.spike_zscore);
  return "";
}

void StepGuard::accept(double grad_norm) {
  consecutive_.clear();
  recent_norms_.push_back(grad_norm);
  if (recent_norms_.size() > kWindow) recent_norms_.pop_front();
}

void StepGuard::skip(int64_t iteration, int64_t consumed_begin, int64_t global, double loss, double grad_norm,
                     const std::string& why) {
  consecutive_.push_back(iteration);
  if (root_) {
    fmt::print("skipped step {}: {}; its batch, samples [{}, {}), is consumed without an update\n", iteration, why,
               consumed_begin, consumed_begin + global);
    std::fflush(stdout);
    if (!log_path_.empty()) {
      std::filesystem::create_directories(std::filesystem::path(log_path_).parent_path());
      std::ofstream out(log_path_, std::ios::app);
      const auto finite_or_null = [](double x) { return std::isfinite(x) ? nlohmann::json(x) : nlohmann::json(); };
      out << nlohmann::json{{"iteration", iteration}, {"consumed_samples", consumed_begin}, {"global_batch", global},
                            {"loss", finite_or_null(loss)}, {"grad_norm", finite_or_null(grad_norm)},
                            {"reason", why}}
                 .dump()
          << "\n";
      MT_CHECK(out.good(), "cannot append to {}", log_path_);
    }
  }
  MT_CHECK(int(consecutive_.size()) < cfg_.max_consecutive,
           "{} steps in a row were skipped (iterations {}; the last because {}): stopping "
           "(--max-consecutive-skips {}){}",
           consecutive_.size(), fmt::join(consecutive_, ", "), why, cfg_.max_consecutive,
           log_path_.empty() ? "" : fmt::format("; their batches are listed in {}", log_path_));
}

nlohmann::json StepGuard::state() const {
  return {{"recent_grad_norms", std::vector<double>(recent_norms_.begin(), recent_norms_.end())},
          {"consecutive_skips", consecutive_}};
}

void StepGuard::restore(const nlohmann::json& state) {
  try {
    const auto norms = state.at("recent_grad_norms").get<std::vector<double>>();
    recent_norms_.assign(norms.begin(), norms.end());
    consecutive_ = state.at("consecutive_skips").get<std::vector<int64_t>>();
  } catch (const nlohmann::json::exception& e) {
    MT_FAIL("the checkpoint's 'skip_guard' attribute {} is not the skip statistics: {}", state.dump().substr(0, 80),
            e.what());
  }
}

}  // namespace mt
