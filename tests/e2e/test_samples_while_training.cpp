// Samples while training (--sample-interval, --sample-prompt, as llm.c
// prints them): every interval a greedy continuation of the prompt, the
// one `moetrain generate` gives for that step's checkpoint.
#include <gtest/gtest.h>

#include <string>

#include "checkpoint/checkpoint_dir.h"
#include "run_moetrain.h"

namespace mt {
namespace {

using test_util::run_moetrain;

TEST(SamplesWhileTraining, EveryIntervalTheGreedyContinuationGenerateGives) {
  test_util::TempDir dir;
  const std::string store = test_util::make_store(dir, "store", test_util::synthetic_text(100000, 15));
  const auto r = run_moetrain("train " + test_util::tiny_model_flags() + " --pp 2 --data-path " + store +
                                  " --train-iters 6 --lr-decay-samples 96 --save-interval 3 --save " + (dir / "ckpt") +
                                  " --sample-interval 3 --sample-prompt 'the experts ' --sample-tokens 12",
                              2);
  ASSERT_EQ(r.status, 0) << r.output;
  for (int step : {3, 6}) {
    const std::string marker = "sample at step " + std::to_string(step) + ": the experts ";
    const size_t at = r.output.find(marker);
    ASSERT_NE(at, std::string::npos) << r.output;
    const auto g = run_moetrain("generate --load " + (dir / ("ckpt/" + checkpoint_dir_name(step))) +
                                    " --prompt 'the experts ' --temperature 0 --max-new-tokens 12 --pp 2",
                                2);
    ASSERT_EQ(g.status, 0) << g.output;
    const auto j = nlohmann::json::parse(g.output.substr(g.output.rfind("{\"completion\"")));
    const std::string completion = j["completion"];  // may hold line breaks
    EXPECT_EQ(r.output.substr(at + marker.size(), completion.size()), completion) << "step " << step;
  }
  EXPECT_EQ(r.output.find("sample at step 1:"), std::string::npos);
}

TEST(SamplesWhileTraining, APromptTooLongForTheContextIsRefused) {
  const auto r = run_moetrain("train " + test_util::tiny_model_flags() +
                              " --data-path x --train-iters 1 --sample-interval 1 --sample-prompt " +
                              std::string(70, 'a'));
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("--sample-prompt is 70 tokens, the context (--seq-length) is 64"), std::string::npos)
      << r.output;
}

}  // namespace
}  // namespace mt
