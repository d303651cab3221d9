// The faults the tests inject through the --debug-* flags, all in one
// place (as llm.c fences its testing code): a rank that fails at an
// iteration (the abort path), gradients made NaN or spiked (skipped
// steps), a rank that sleeps in every step (the straggler report), weights
// perturbed after every update (how far rounding differences carry), and
// a corrupted start-up product check. With every flag at its default,
// nothing here does anything.
#pragma once

#include <cstdint>

#include "model/parameters.h"
#include "optim/master_weights.h"

namespace mt {

struct FaultConfig {
  int fail_rank = 0;                // the rank the faults below happen on (--debug-fail-rank)
  int64_t fail_at_iteration = 0;    // it throws at the start of this iteration (0: never)
  int64_t nan_at_iteration = 0;     // its gradients become NaN from this iteration (0: never)
  int64_t nan_iterations = 1;       // for this many iterations
  int64_t spike_at_iteration = 0;   // its gradients are 1000 times larger at this iteration (0: never)
  int64_t slow_ms = 0;              // it sleeps this long in every step (0: never)
  double perturb_weights = 0.0;     // every weight times 1 +- this at the start and after every update (0: never)
  bool corrupt_gemm_check = false;  // the start-up product check sees a wrong product
};

class FaultInjection {
 public:
  FaultInjection(const FaultConfig& cfg, int world_rank) : cfg_(cfg), failing_(world_rank == cfg.fail_rank) {}

  // At the start of a step of `iteration` (counted from 1): the failing
  // rank throws, or sleeps.
  void start_step(int64_t iteration) const;
  // The step's reduced gradient shard, before its norm is taken.
  void corrupt_gradients(Backend<float>& be, float* shard, size_t size, int64_t iteration) const;
  // After the start-up and after every update: the optimizer's weights
  // moved (the float32 master weights under bf16), and the model's from
  // them. `round` numbers the perturbation.
  template <typename T>
  void perturb(MasterWeights<T>& master, const Parameters<T>& params, uint64_t round) const;

 private:
  FaultConfig cfg_;
  bool failing_;
};

}  // namespace mt
