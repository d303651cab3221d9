#include "optim/adamw.h"

#include <cmath>

#include "runtime/check.h"

namespace mt {

void validate(const AdamWConfig& c) {
  MT_CHECK(c.beta1 >= 0 && c.beta1 < 1, "--adam-beta1 must lie in [0, 1), got {}", c.beta1);
  MT_CHECK(c.beta2 >= 0 && c.beta2 < 1, "--adam-beta2 must lie in [0, 1), got {}", c.beta2);
  MT_CHECK(c.eps > 0, "--adam-eps must be positive, got {}", c.eps);
  MT_CHECK(c.weight_decay >= 0, "--weight-decay must be >= 0, got {}", c.weight_decay);
  MT_CHECK(c.clip_grad >= 0, "--clip-grad must be >= 0, got {}", c.clip_grad);
}

template <typename T>
AdamW<T>::AdamW(Backend<T>& be, const AdamWConfig& cfg, size_t n, const TensorParallel& tp,
                Communicator* pipeline)
    : be_(be), cfg_(cfg), tp_(tp), pipeline_(pipeline), exp_avg_(be, n), exp_avg_sq_(be, n) {}

template <typename T>
double AdamW<T>::grad_norm(const Parameters<T>& p) {
  double sum = 0.0;
  for (const ParamTensor& t : p.tensors)
    if (!t.replicated() || tp_.rank == 0) sum += be_.sum_squares(t.numel, p.grads.data() + t.offset);
  tp_.all_reduce_sum(&sum, 1);
  if (pipeline_) pipeline_->all_reduce_sum(&sum, 1);
  return std::sqrt(sum);
}

template <typename T>
double AdamW<T>::step(Parameters<T>& p, double lr) {
  const double norm = grad_norm(p);
  MT_CHECK(std::isfinite(norm), "gradient norm is {} at Adam step {}: the loss diverged", norm,
           step_ + 1);
  if (cfg_.clip_grad > 0) {
    const double scale = cfg_.clip_grad / (norm + 1e-6);
    if (scale < 1.0) be_.scale(p.size(), T(scale), p.grads.data());
  }
  ++step_;
  const double bc1 = 1.0 - std::pow(cfg_.beta1, double(step_));
  const double bc2 = 1.0 - std::pow(cfg_.beta2, double(step_));
  for (const ParamTensor& t : p.tensors) {
    const double wd = t.weight_decay ? cfg_.weight_decay : 0.0;
    be_.adamw(p.values.data() + t.offset, p.grads.data() + t.offset, exp_avg_.data() + t.offset,
              exp_avg_sq_.data() + t.offset, t.numel, lr, cfg_.beta1, cfg_.beta2, cfg_.eps, wd,
              bc1, bc2);
  }
  return norm;
}

template class AdamW<float>;
template class AdamW<double>;

}  // namespace mt
