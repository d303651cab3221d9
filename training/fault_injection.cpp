#include "training/fault_injection.h"

#include <chrono>
#include <limits>
#include <thread>
#include <vector>

#include "runtime/check.h"

namespace mt {

void FaultInjection::start_step(int64_t iteration) const {
  if (!failing_) return;
  if (cfg_.fail_at_iteration == iteration)
    MT_FAIL("injected failure at iteration {} on rank {} (--debug-fail-at-iteration)", iteration, cfg_.fail_rank);
  if (cfg_.slow_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(cfg_.slow_ms));
}

void FaultInjection::corrupt_gradients(Backend<float>& be, float* shard, size_t size, int64_t iteration) const {
  if (!failing_ || size == 0) return;
  if (cfg_.nan_at_iteration > 0 && iteration >= cfg_.nan_at_iteration &&
      iteration < cfg_.nan_at_iteration + cfg_.nan_iterations)
    shard[0] = std::numeric_limits<float>::quiet_NaN();
  if (cfg_.spike_at_iteration == iteration) be.scale(size, 1000.0f, shard);
}

template <typename T>
void FaultInjection::perturb(MasterWeights<T>& master, const Parameters<T>& params, uint64_t round) const {
  if (cfg_.perturb_weights == 0.0) return;
  std::vector<float> weights(params.padded_size());
  master.gather(weights.data());
  params.perturb(weights.data(), cfg_.perturb_weights, round);
  master.set(weights.data());
}

template void FaultInjection::perturb<float>(MasterWeights<float>&, const Parameters<float>&, uint64_t) const;
template void FaultInjection::perturb<bf16>(MasterWeights<bf16>&, const Parameters<bf16>&, uint64_t) const;

}  // namespace mt
