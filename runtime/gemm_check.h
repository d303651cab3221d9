// The start-up check of a backend's matrix product: older OpenBLAS builds
// pick kernels that compute wrong products (or crash) on CPUs newer than
// they know, and a run on them would train garbage without a word. A few
// small products, every transpose case and beta = 0 and 1 (the model uses
// both), are compared with a plain loop in double precision; under a
// millisecond.
#pragma once

#include <memory>
#include <string>

#include "runtime/backend.h"
#include "runtime/communicator.h"
#include "runtime/profiling_backend.h"

namespace mt {

// "" when every element is within the rounding bound of a k-term product
// accumulated in acc_t<T> and rounded to T, |error| <= 2 (k + 1)
// eps(acc) sum_k |a||b| + eps(T) |result|; else what differs, naming the
// library. corrupt: perturb one product element first (tests of the refusal).
template <typename T>
std::string gemm_check_problem(Backend<T>& be, bool corrupt = false);

// Collective over `world`: every rank checks its backend; if any rank's
// product is wrong, every rank throws, naming the ranks and the remedy.
template <typename T>
void check_gemm_on_every_rank(Backend<T>& be, Communicator& world, bool corrupt = false);

// The CPU backend in precision T, checked on every rank of `world` as
// above, and timed into `profile` when given (--profile). Collective.
template <typename T>
std::unique_ptr<Backend<T>> checked_cpu_backend(Communicator& world, bool corrupt_check = false,
                                                OpTimes* profile = nullptr);

}  // namespace mt
