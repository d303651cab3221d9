#include "optim/lr_schedule.h"

#include <cmath>

#include "runtime/check.h"

namespace mt {

void validate(const LrScheduleConfig& c) {
  MT_CHECK(c.lr >= 0, "--lr must be >= 0, got {}", c.lr);
  MT_CHECK(c.min_lr >= 0 && c.min_lr <= c.lr, "--min-lr {} must lie in [0, --lr {}]", c.min_lr, c.lr);
  MT_CHECK(c.warmup_samples >= 0, "--lr-warmup-samples must be >= 0, got {}", c.warmup_samples);
  MT_CHECK(c.decay_style == "cosine" || c.decay_style == "linear" || c.decay_style == "constant",
           "--lr-decay-style must be cosine, linear or constant, got '{}'", c.decay_style);
  if (c.decay_style != "constant")
    MT_CHECK(c.decay_samples > c.warmup_samples,
             "--lr-decay-samples {} must exceed --lr-warmup-samples {}", c.decay_samples,
             c.warmup_samples);
}

double learning_rate(const LrScheduleConfig& c, int64_t consumed) {
  if (c.warmup_samples > 0 && consumed <= c.warmup_samples)
    return c.lr * double(consumed) / double(c.warmup_samples);
  if (c.decay_style == "constant") return c.lr;
  if (consumed >= c.decay_samples) return c.min_lr;
  const double ratio =
      double(consumed - c.warmup_samples) / double(c.decay_samples - c.warmup_samples);
  const double coeff = c.decay_style == "cosine" ? 0.5 * (std::cos(M_PI * ratio) + 1.0) : 1.0 - ratio;
  return c.min_lr + coeff * (c.lr - c.min_lr);
}

}  // namespace mt
