// Pipeline schedules and stage splits.
#include <gtest/gtest.h>

#include "parallel/pipeline_schedule.h"
#include "test_util.h"

namespace mt {
namespace {

std::string render(const std::vector<PipelineStep>& steps) {
  std::string s;
  for (const auto& p : steps) {
    s += p.kind == PipelineStep::Forward ? 'F' : 'B';
    s.append(std::to_string(p.micro_batch)).append(" ");
  }
  return s;
}

TEST(PipelineSchedule, OneFOneBOrderPerStage) {
  // PP = 4, m = 6: stage s warms up with 3 - s forwards.
  EXPECT_EQ(render(pipeline_steps(PipelineSchedule::OneFOneB, 0, 4, 6)), "F0 F1 F2 F3 B0 F4 B1 F5 B2 B3 B4 B5 ");
  EXPECT_EQ(render(pipeline_steps(PipelineSchedule::OneFOneB, 2, 4, 6)), "F0 F1 B0 F2 B1 F3 B2 F4 B3 F5 B4 B5 ");
  EXPECT_EQ(render(pipeline_steps(PipelineSchedule::OneFOneB, 3, 4, 6)), "F0 B0 F1 B1 F2 B2 F3 B3 F4 B4 F5 B5 ");
  // Fewer micro-batches than stages.
  EXPECT_EQ(render(pipeline_steps(PipelineSchedule::OneFOneB, 0, 4, 2)), "F0 F1 B0 B1 ");
  EXPECT_EQ(render(pipeline_steps(PipelineSchedule::GPipe, 1, 4, 3)), "F0 F1 F2 B0 B1 B2 ");
}

TEST(PipelineSchedule, PeakLiveActivations) {
  for (int stages : {1, 2, 4, 8, 15})
    for (int m : {1, 2, 3, 8, 20})
      for (int s = 0; s < stages; ++s) {
        auto one = pipeline_steps(PipelineSchedule::OneFOneB, s, stages, m);
        auto gpipe = pipeline_steps(PipelineSchedule::GPipe, s, stages, m);
        EXPECT_EQ(peak_live_activations(one), std::min(stages - s, m)) << stages << " " << m << " " << s;
        EXPECT_EQ(peak_live_activations(gpipe), m);
        EXPECT_EQ(one.size(), size_t(2 * m));
      }
}

TEST(StageLayers, EvenAndUnevenSplits) {
  using P = std::vector<std::pair<int, int>>;
  EXPECT_EQ(stage_layers(8, 4, 0, 0), (P{{0, 2}, {2, 4}, {4, 6}, {6, 8}}));
  // 15 stages, fewer layers on the first (which also holds the embedding).
  auto split = stage_layers(113, 15, 1, 0);
  EXPECT_EQ(split.front(), (std::pair<int, int>{0, 1}));
  EXPECT_EQ(split[1], (std::pair<int, int>{1, 9}));
  EXPECT_EQ(split.back(), (std::pair<int, int>{105, 113}));
  EXPECT_EQ(stage_layers(7, 3, 1, 0), (P{{0, 1}, {1, 4}, {4, 7}}));
  EXPECT_EQ(stage_layers(7, 3, 0, 3), (P{{0, 2}, {2, 4}, {4, 7}}));
  EXPECT_EQ(stage_layers(5, 2, 2, 3), (P{{0, 2}, {2, 5}}));
  test_util::expect_error([] { stage_layers(7, 2, 0, 0); }, {"--num-layers 7 does not split evenly over 2"});
  test_util::expect_error([] { stage_layers(4, 8, 0, 0); }, {"does not split evenly"});
  test_util::expect_error([] { stage_layers(4, 2, 5, 0); }, {"exceed --num-layers 4"});
  test_util::expect_error([] { stage_layers(4, 1, 1, 0); }, {"need --pipeline-model-parallel-size > 1"});
  EXPECT_EQ(parse_pipeline_schedule("gpipe"), PipelineSchedule::GPipe);
  test_util::expect_error([] { parse_pipeline_schedule("zb"); }, {"--pipeline-schedule must be 1f1b or gpipe"});
}

}  // namespace
}  // namespace mt
