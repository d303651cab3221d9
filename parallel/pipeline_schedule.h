// Pipeline schedules (docs/design.md section 4): the order in which one stage runs
// the forward and backward passes of a step's micro-batches.
//
//   GPipe: every forward, then every backward. A stage keeps all m
//          micro-batches' activations alive at its peak.
//   1F1B:  (PipeDream-Flush, Megatron's default) stage s runs
//          min(PP - 1 - s, m) warm-up forwards, then alternates one forward
//          and one backward, then drains the remaining backwards; it keeps
//          at most min(PP - s, m) micro-batches alive.
//
// Every stage runs the backwards in micro-batch order, so the gradient a
// stage sends is the one its neighbour waits for next.
#pragma once

#include <string>
#include <vector>

namespace mt {

enum class PipelineSchedule { OneFOneB, GPipe };

// "1f1b" or "gpipe"; throws naming --pipeline-schedule otherwise.
PipelineSchedule parse_pipeline_schedule(const std::string& name);

struct PipelineStep {
  enum Kind { Forward, Backward } kind;
  int micro_batch;
};

std::vector<PipelineStep> pipeline_steps(PipelineSchedule schedule, int stage, int stages,
                                         int micro_batches);

// The most micro-batches whose activations are alive at once (forward run,
// backward not yet) when a stage runs `steps`.
int peak_live_activations(const std::vector<PipelineStep>& steps);

// Layers of each stage: [first, last) for stage 0..PP-1. An even split by
// default; first_stage_layers / last_stage_layers (> 0) fix the first and
// last stage's counts (Megatron's --decoder-first/last-pipeline-num-layers)
// and the rest is split evenly. Throws naming the flags when it cannot.
std::vector<std::pair<int, int>> stage_layers(int layers, int stages, int first_stage_layers,
                                              int last_stage_layers);

}  // namespace mt
