// SIGTERM and SIGUSR1, what Slurm (and most schedulers) send before a
// preemption or the end of a job's time: the handler only records the
// signal; the training loop polls it at each step boundary, agrees with the
// other ranks, saves and exits cleanly.
#pragma once

namespace mt {

// Installs the handlers (idempotent).
void install_stop_signal_handlers();
// The signal received since installation, or 0.
int stop_signal();
// "SIGTERM", "SIGUSR1", ...
const char* signal_name(int sig);

}  // namespace mt
