// The matrix-product rate a backend reaches, the denominator of the model
// FLOPs utilisation (MFU) the progress line shows. A GPU's peak comes from
// its data sheet; a CPU's depends on its cores, their vector units and the
// library, so it is measured: the best of a few 512 x 512 x 512 products
// in the run's precision (the first one creates the kernels), within a
// time budget.
#pragma once

#include "runtime/backend.h"
#include "runtime/communicator.h"

namespace mt {

// GFLOP/s of this rank's backend; stops after `budget_seconds` (and at
// least two products).
template <typename T>
double measure_matmul_gflops(Backend<T>& be, double budget_seconds = 0.05);

// Collective over `world`: every rank measures at the same moment (ranks
// sharing cores share them while measuring, as while training), and the
// job's peak is the sum.
template <typename T>
double measure_job_matmul_gflops(Backend<T>& be, Communicator& world);

}  // namespace mt
