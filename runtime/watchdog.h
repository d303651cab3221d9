// Liveness. Whatever may block on another rank says what it waits for (a
// WaitingFor scope: the collective and its group, the pipeline transfer and
// its peer); long local work marks progress. A Watchdog thread stops the
// whole job when its rank has made no progress for --distributed-timeout-
// minutes, reporting the step and what the rank waits in, so that a hung or
// stopped rank is named by the ranks waiting for it instead of leaving
// everyone silent forever.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>

namespace mt {

// This rank is alive and working (cheap: one atomic store).
void mark_progress();
// The step (iteration, from 1) the rank is running, for the report.
void set_current_step(int64_t iteration);

// While alive, this rank waits for `what`, e.g. "all-reduce in TP group
// (world ranks 0, 1)". Entering and leaving both count as progress.
class WaitingFor {
 public:
  explicit WaitingFor(std::string what);
  ~WaitingFor();
  WaitingFor(const WaitingFor&) = delete;
  WaitingFor& operator=(const WaitingFor&) = delete;

 private:
  std::string previous_;
};

// What the rank has been waiting in, or "" (for the report and tests).
std::string current_wait();

class Watchdog {
 public:
  // timeout_s <= 0: no watchdog. rank: this rank's world rank, for the report.
  Watchdog(double timeout_s, int rank);
  ~Watchdog();
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;

 private:
  void run();
  double timeout_s_;
  int rank_;
  // The destructor wakes the thread from its tick at once, so that a run
  // does not wait out a last tick (up to a second) before it exits.
  std::mutex stop_mutex_;
  std::condition_variable stop_signal_;
  bool stop_ = false;  // guarded by stop_mutex_
  std::thread thread_;
};

}  // namespace mt
