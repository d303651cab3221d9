#include "training/stop_signals.h"

#include <pthread.h>

#include <csignal>
#include <ctime>

namespace mt {

namespace {

volatile std::sig_atomic_t received = 0;

extern "C" void record_signal(int sig) { received = sig; }

sigset_t stop_set() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGUSR1);
  return set;
}

}  // namespace

// The signals are blocked in this thread and so in the compute threads it
// starts (OpenMP's): a handler interrupting a kernel or an MPI call in
// flight corrupted the heap now and then (malloc's checks stopped the
// process inside a product after SIGTERM). They stay pending until the step
// boundary takes them (stop_signal); a thread that does not block them
// (MPI's own, started before) runs the handler, which only records the
// signal.
void install_stop_signal_handlers() {
  struct sigaction action {};
  action.sa_handler = record_signal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;  // blocking calls (MPI, I/O) carry on
  sigaction(SIGTERM, &action, nullptr);
  sigaction(SIGUSR1, &action, nullptr);
  const sigset_t set = stop_set();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

int stop_signal() {
  const sigset_t set = stop_set();
  const struct timespec now {};
  const int taken = sigtimedwait(&set, nullptr, &now);  // a pending one, without waiting
  if (taken > 0) received = taken;
  return received;
}

const char* signal_name(int sig) {
  switch (sig) {
    case SIGTERM: return "SIGTERM";
    case SIGUSR1: return "SIGUSR1";
    default: return "a signal";
  }
}

}  // namespace mt
