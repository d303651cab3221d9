// What `train` reports: the start-up summary rank 0 prints before the first
// step, and each log interval's progress line and metrics record, from an
// IntervalLog that owns the interval's counters.
#pragma once

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "data/blended_stream.h"
#include "model/transformer.h"
#include "optim/adamw.h"
#include "parallel/grad_sync.h"
#include "parallel/topology.h"
#include "runtime/backend.h"
#include "runtime/profiling_backend.h"
#include "training/progress.h"
#include "training/train_options.h"
#include "training/train_state.h"

namespace mt {

// Samples consumed from each source of the blend, for the logs and the
// checkpoint's data attribute.
struct SourceProgress {
  std::vector<uint64_t> consumed;  // [sources]
  // Counts the stream positions [begin, end): every replica's slice.
  void count(const data::BlendedStream& s, int64_t begin, int64_t end);
  std::string line(const data::BlendedStream& s) const;  // "text 0.52 ep, code 1.04 ep"
  nlohmann::json json(const data::BlendedStream& s) const;
};

// The TP group's traffic so far: its all-reduces, and sequence
// parallelism's reduce-scatters and all-gathers.
struct TpTraffic {
  double all_reduce_s = 0, gather_scatter_s = 0;
  uint64_t all_reduce_bytes = 0, gather_scatter_bytes = 0;
  static TpTraffic of(const Communicator& c) {
    return {c.all_reduce_seconds, c.gather_scatter_seconds, c.all_reduce_bytes, c.gather_scatter_bytes};
  }
  TpTraffic operator-(const TpTraffic& o) const {
    return {all_reduce_s - o.all_reduce_s, gather_scatter_s - o.gather_scatter_s,
            all_reduce_bytes - o.all_reduce_bytes, gather_scatter_bytes - o.gather_scatter_bytes};
  }
  TpTraffic operator+(const TpTraffic& o) const {
    return {all_reduce_s + o.all_reduce_s, gather_scatter_s + o.gather_scatter_s,
            all_reduce_bytes + o.all_reduce_bytes, gather_scatter_bytes + o.gather_scatter_bytes};
  }
};

// Bytes one rank holds for training (what `moetrain plan` predicts): the
// weights and the gradient accumulation buffer, padded for ZeRO-1; the
// reduce-scattered gradient shard; the AdamW moments of the shard; one
// micro-batch's activations and the model's work space
// (Transformer::activation_bytes, workspace_bytes).
struct RankAllocation {
  int64_t rank, tp, pp, dp, cp, parameters, weight_bytes, grad_bytes, optimizer_bytes, activation_bytes,
      workspace_bytes;
};

// Collective over the world: every rank's RankAllocation. The optimizer
// bytes hold the two moments, and under bf16 the float32 master weights.
template <typename T>
std::vector<RankAllocation> gather_memory(Topology& topo, const Transformer<T>& model, const AdamW<float>& optim);

// What rank 0 prints before the first step: layout, model, memory, data.
struct StartUpSummary {
  const TrainOptions& options;
  const Topology& topo;
  size_t parameters;  // this rank's
  std::vector<RankAllocation> memory;
  const data::BlendedStream& stream;
  double stream_seconds;  // to build the blended stream
  int64_t run_samples;
  int threads;
  std::string backend_name, backend_library;
};
void print_start_up(const StartUpSummary& s);

// The rank whose compute took longest in an interval (a straggler: a slow
// node, a throttled GPU), and by how much it exceeded the median rank's
// (0.25: 25% longer; the median of an even count is the mean of the middle
// two).
struct Straggler {
  int rank = 0;
  double over_median = 0;
};
Straggler slowest_rank(const std::vector<double>& compute_seconds);

// What one optimizer step produced, for the interval's averages.
struct StepOutcome {
  double loss = 0, aux = 0, z = 0, lr = 0, grad_norm = 0;
  bool skipped = false;     // no update (training/step_guard.h); its losses are left out of the averages
  int64_t samples = 0, tokens = 0;
  double wait_seconds = 0;  // this stage blocked on its pipeline neighbours
  double seconds = 0;       // the whole step
  double tp_seconds = 0;    // in tensor-parallel collectives
  double dp_seconds = 0;    // waiting for the ZeRO-1 reduce-scatters, and the all-gather
};

// --profile: where this rank's steps went, from the second step on (the
// first creates the products' kernels): each operation kind's kernels,
// communication, pipeline waits, and the rest (host-side routing, data,
// bookkeeping).
struct StepProfile {
  OpTimes ops;  // filled by the profiling backend
  int64_t steps = 0;
  double seconds = 0, tp_seconds = 0, dp_seconds = 0, wait_seconds = 0;
  void add(const StepOutcome& step);
  void clear() { *this = {}; }
};
void print_profile(const StepProfile& p, int rank);

// The counters of one log interval: steps, samples, tokens, summed losses,
// pipeline waits, and the communication counters at its start.
template <typename T>
class IntervalLog {
 public:
  // peak_gflops: the job's matrix-product peak, for MFU (runtime/matmul_peak.h).
  IntervalLog(const TrainOptions& o, Topology& topo, GradSync<float>& grad_sync, Transformer<T>& model,
              const data::BlendedStream& stream, int64_t run_samples, const std::string& metrics_path,
              double peak_gflops);

  void add(const StepOutcome& step);
  // A line (rank 0) and a metrics record after every --log-interval-th
  // step, the last, and a step with a validation loss (--valid-data-path),
  // which both show. Collective: the stages share their idle times and the
  // ranks their expert loads.
  void report(const TrainState& state, const SourceProgress& progress, bool last,
              std::optional<double> valid_loss = std::nullopt);

  // Runs `work` (a validation) outside the interval's measurements: its
  // time, TP all-reduces, expert loads and all-to-alls are not the steps'.
  template <typename F>
  auto outside_interval(F&& work) {
    const Clock::time_point begin = Clock::now();
    const TpTraffic tp = TpTraffic::of(*topo_.tp().comm);
    const ExpertLoad load = model_.expert_load();
    const DispatchStats dispatch = model_.dispatch_stats();
    auto result = work();
    start_ += Clock::now() - begin;
    tp_at_start_ = tp_at_start_ + (TpTraffic::of(*topo_.tp().comm) - tp);
    model_.expert_load() = load;
    model_.dispatch_stats() = dispatch;
    return result;
  }

 private:
  using Clock = std::chrono::steady_clock;
  StepMetrics metrics(const TrainState& state, Clock::time_point now) const;
  std::vector<double> stage_idle_shares(double interval_s);
  std::vector<double> compute_seconds_of_ranks();
  void restart(Clock::time_point now);

  const TrainOptions& o_;
  Topology& topo_;
  GradSync<float>& grad_sync_;
  Transformer<T>& model_;
  const data::BlendedStream& stream_;
  int64_t run_samples_;
  MetricsWriter metrics_;
  Clock::time_point run_start_, start_;
  int64_t steps_ = 0, samples_ = 0, tokens_ = 0, skipped_ = 0;
  double loss_sum_ = 0, aux_sum_ = 0, z_sum_ = 0, wait_seconds_ = 0;
  double compute_seconds_ = 0;  // the steps' time not spent waiting for other ranks
  double peak_gflops_;
  StepOutcome last_;
  TpTraffic tp_at_start_;
};

extern template class IntervalLog<float>;
extern template class IntervalLog<bf16>;

}  // namespace mt
