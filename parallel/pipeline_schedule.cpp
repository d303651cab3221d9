#include "parallel/pipeline_schedule.h"

#include <algorithm>

#include "runtime/check.h"

namespace mt {

PipelineSchedule parse_pipeline_schedule(const std::string& name) {
  if (name == "1f1b") return PipelineSchedule::OneFOneB;
  if (name == "gpipe") return PipelineSchedule::GPipe;
  MT_FAIL("--pipeline-schedule must be 1f1b or gpipe, got '{}'", name);
}

std::vector<PipelineStep> pipeline_steps(PipelineSchedule schedule, int stage, int stages, int m) {
  MT_CHECK(m >= 1 && stage >= 0 && stage < stages, "pipeline schedule of {} micro-batches on stage {} of {}",
           m, stage, stages);
  std::vector<PipelineStep> steps;
  auto forward = [&](int i) { steps.push_back({PipelineStep::Forward, i}); };
  auto backward = [&](int i) { steps.push_back({PipelineStep::Backward, i}); };
  if (schedule == PipelineSchedule::GPipe) {
    for (int i = 0; i < m; ++i) forward(i);
    for (int i = 0; i < m; ++i) backward(i);
    return steps;
  }
  const int warmup = std::min(stages - 1 - stage, m);
  for (int i = 0; i < warmup; ++i) forward(i);
  for (int i = 0; i < m - warmup; ++i) {
    forward(warmup + i);
    backward(i);
  }
  for (int i = m - warmup; i < m; ++i) backward(i);
  return steps;
}

int peak_live_activations(const std::vector<PipelineStep>& steps) {
  int live = 0, peak = 0;
  for (const PipelineStep& s : steps) {
    live += s.kind == PipelineStep::Forward ? 1 : -1;
    peak = std::max(peak, live);
  }
  return peak;
}

std::vector<std::pair<int, int>> stage_layers(int layers, int stages, int first, int last) {
  MT_CHECK(stages >= 1, "--pipeline-model-parallel-size must be >= 1, got {}", stages);
  MT_CHECK(first >= 0 && last >= 0, "--decoder-first/last-pipeline-num-layers must be >= 0");
  MT_CHECK(stages > 1 || (first == 0 && last == 0),
           "--decoder-first/last-pipeline-num-layers need --pipeline-model-parallel-size > 1");
  std::vector<int> count(stages, 0);
  int fixed = 0, middle = stages;
  if (first > 0) count[0] = first, fixed += first, --middle;
  if (last > 0 && stages > 1) count[stages - 1] = last, fixed += last, --middle;
  const int rest = layers - fixed;
  MT_CHECK(rest >= 0, "--decoder-first-pipeline-num-layers {} and --decoder-last-pipeline-num-layers "
           "{} exceed --num-layers {}", first, last, layers);
  if (middle > 0) {
    MT_CHECK(rest % middle == 0,
             "--num-layers {} does not split evenly over {} pipeline stages{} ({} layers for {} "
             "stages); set --decoder-first-pipeline-num-layers / --decoder-last-pipeline-num-layers",
             layers, stages, fixed ? " after the fixed first/last stages" : "", rest, middle);
    for (int s = 0; s < stages; ++s)
      if (count[s] == 0 && !((s == 0 && first > 0) || (s == stages - 1 && last > 0))) count[s] = rest / middle;
  } else {
    MT_CHECK(rest == 0, "--num-layers {} is not the sum of the first and last stages' {} + {}", layers,
             first, last);
  }
  std::vector<std::pair<int, int>> out;
  int begin = 0;
  for (int s = 0; s < stages; ++s) {
    MT_CHECK(count[s] >= 1, "pipeline stage {} would hold no layers ({} layers over {} stages)", s,
             layers, stages);
    out.push_back({begin, begin + count[s]});
    begin += count[s];
  }
  return out;
}

}  // namespace mt
