// Which steps may update the model. A step whose loss or gradient norm is
// not finite, or whose gradient norm is more than --skip-spike-zscore
// standard deviations above the mean of the last accepted steps, is
// skipped: no update, the Adam step not counted, the batch consumed. The
// decision is a function of the all-reduced loss and norm, so every rank
// takes the same one. After --max-consecutive-skips skips in a row the run
// stops. Each skip is logged, with the stream positions of its batch, to
// SAVE/skipped_steps.jsonl; --skip-steps-file FILE (such a file) makes a
// run step over the batches it lists without training on them.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <deque>
#include <set>
#include <string>

namespace mt {

struct SkipConfig {
  double spike_zscore = 0.0;    // 0: no spike detection
  int max_consecutive = 5;      // skips in a row that stop the run
  std::string steps_file;       // --skip-steps-file
};

class StepGuard {
 public:
  // save_dir: where skipped_steps.jsonl goes ("" : nowhere); root: this rank
  // writes it and prints the skips.
  StepGuard(const SkipConfig& cfg, const std::string& save_dir, bool root);

  // Whether --skip-steps-file lists the batch starting at this position.
  bool listed(int64_t consumed_samples) const { return listed_.count(consumed_samples) > 0; }
  // "" when the step may update the model; otherwise why it may not.
  std::string verdict(double loss, double grad_norm) const;
  // An accepted step: its norm joins the spike statistics, the run of
  // consecutive skips ends.
  void accept(double grad_norm);
  // A skipped step (iteration counted from 1; its batch is global samples
  // from consumed_begin): logged; throws once max_consecutive are in a row.
  void skip(int64_t iteration, int64_t consumed_begin, int64_t global, double loss, double grad_norm,
            const std::string& why);

  // What a resume needs to decide as an uninterrupted run would.
  nlohmann::json state() const;
  void restore(const nlohmann::json& state);

 private:
  static constexpr size_t kWindow = 100;      // accepted norms the spike statistics cover
  static constexpr size_t kMinAccepted = 10;  // before which no spike is judged
  SkipConfig cfg_;
  std::string log_path_;
  bool root_;
  std::set<int64_t> listed_;
  std::deque<double> recent_norms_;
  std::vector<int64_t> consecutive_;  // iterations of the current run of skips
};

}  // namespace mt
