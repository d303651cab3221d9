#include "runtime/watchdog.h"

#include <fmt/format.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>

namespace mt {

namespace {

using Clock = std::chrono::steady_clock;

std::atomic<int64_t> g_last_progress_ns{Clock::now().time_since_epoch().count()};
std::atomic<int64_t> g_step{0};
std::mutex g_wait_mutex;
std::string g_wait;  // guarded by g_wait_mutex
Clock::time_point g_wait_since;

double seconds_since(int64_t ns) {
  return std::chrono::duration<double>(Clock::now().time_since_epoch() - Clock::duration(ns)).count();
}

}  // namespace

void mark_progress() { g_last_progress_ns.store(Clock::now().time_since_epoch().count(), std::memory_order_relaxed); }

void set_current_step(int64_t iteration) {
  g_step.store(iteration, std::memory_order_relaxed);
  mark_progress();
}

WaitingFor::WaitingFor(std::string what) {
  mark_progress();
  std::lock_guard<std::mutex> lock(g_wait_mutex);
  previous_ = std::move(g_wait);
  g_wait = std::move(what);
  g_wait_since = Clock::now();
}

WaitingFor::~WaitingFor() {
  mark_progress();
  std::lock_guard<std::mutex> lock(g_wait_mutex);
  g_wait = std::move(previous_);
}

std::string current_wait() {
  std::lock_guard<std::mutex> lock(g_wait_mutex);
  return g_wait;
}

Watchdog::Watchdog(double timeout_s, int rank) : timeout_s_(timeout_s), rank_(rank) {
  if (timeout_s_ <= 0) return;
  mark_progress();
  thread_ = std::thread([this] { run(); });
}

Watchdog::~Watchdog() {
  {
    std::lock_guard<std::mutex> lock(stop_mutex_);
    stop_ = true;
  }
  stop_signal_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void Watchdog::run() {
  const auto tick = std::chrono::milliseconds(std::min<int64_t>(1000, int64_t(timeout_s_ * 1000 / 4) + 1));
  std::unique_lock<std::mutex> lock(stop_mutex_);
  while (!stop_signal_.wait_for(lock, tick, [this] { return stop_; })) {
    const double idle = seconds_since(g_last_progress_ns.load(std::memory_order_relaxed));
    if (idle < timeout_s_) continue;
    std::string wait;
    double waiting = 0;
    {
      std::lock_guard<std::mutex> wait_lock(g_wait_mutex);
      wait = g_wait;
      waiting = std::chrono::duration<double>(Clock::now() - g_wait_since).count();
    }
    const int64_t step = g_step.load();
    std::fprintf(stderr, "%s\n",
                 fmt::format("moetrain: error: [rank {}] no progress for {:.0f} s (--distributed-timeout-minutes {:g}) "
                             "in step {}: {}; stopping the job",
                             rank_, idle, timeout_s_ / 60.0, step,
                             wait.empty() ? std::string("not waiting for another rank (local work)")
                                          : fmt::format("waiting {:.0f} s in {}", waiting, wait))
                     .c_str());
    std::fflush(stderr);
    // No MPI call can be trusted from here (the main thread is inside one):
    // leave, and mpirun ends the other ranks.
    std::_Exit(3);
  }
}

}  // namespace mt
