// `moetrain generate` (docs/design.md section 8): greedy continuations are
// the same on every layout, sampling is reproducible from its seed and
// reduces to greedy at top-k 1 or a tiny top-p, and bad input is refused.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "run_moetrain.h"

namespace mt {
namespace {

using test_util::contains;
using test_util::run_moetrain;

// The JSON lines generate prints last, one a prompt.
std::vector<nlohmann::json> results(const std::string& output) {
  std::vector<nlohmann::json> out;
  for (size_t at = 0; at < output.size();) {
    const size_t end = std::min(output.find('\n', at), output.size());
    const std::string line = output.substr(at, end - at);
    if (line.rfind("{\"completion\"", 0) == 0) out.push_back(nlohmann::json::parse(line));
    at = end + 1;
  }
  return out;
}

class Generate : public ::testing::Test {
 protected:
  // One checkpoint for the suite: a tiny model that has learned some spelling.
  static void SetUpTestSuite() {
    const auto r = test_util::shared_fixture_dir("generate", [](const std::string& d) {
      const std::string store = test_util::make_store(d, "store", test_util::synthetic_text(150000, 14));
      return run_moetrain("train " + test_util::tiny_model_flags() + " --data-path " + store +
                          " --train-iters 60 --lr-decay-samples 480 --save " + d + "/ckpt");
    });
    ASSERT_EQ(r.status, 0) << r.output;
    checkpoint_ = r.output + "/ckpt";
  }
  std::string generate(const std::string& flags) {
    return "generate --load " + checkpoint_ + " --max-new-tokens 24 " + flags;
  }
  static inline std::string checkpoint_;
  test_util::TempDir dir;
};

TEST_F(Generate, GreedyContinuationsAreTheSameOnEveryLayout) {
  const std::string prompt = "--prompt 'the model routes ' --temperature 0";
  const auto one = run_moetrain(generate(prompt));
  ASSERT_EQ(one.status, 0) << one.output;
  const auto want = results(one.output);
  ASSERT_EQ(want.size(), 1u) << one.output;
  EXPECT_EQ(want[0]["tokens"], 24);
  EXPECT_TRUE(contains(one.output, "the model routes " + want[0]["completion"].get<std::string>())) << one.output;
  const std::vector<double> margins = want[0]["margins"];
  for (const auto& [flags, ranks] : {std::pair<std::string, int>{"--tp 2", 2}, {"--pp 2", 2}, {"--tp 2 --pp 2", 4}}) {
    SCOPED_TRACE(flags);
    const auto r = run_moetrain(generate(prompt + " " + flags), ranks);
    ASSERT_EQ(r.status, 0) << r.output;
    const auto got = results(r.output);
    ASSERT_EQ(got.size(), 1u) << r.output;
    // The layouts add the same products in other orders: the margins move
    // by float32 rounding. A token whose margin over the runner-up is within
    // 10 times the largest such move could flip; compare up to the first.
    const std::vector<double> other = got[0]["margins"];
    double moved = 1e-6;
    for (size_t i = 0; i < std::min(margins.size(), other.size()); ++i)
      moved = std::max(moved, std::abs(margins[i] - other[i]));
    size_t sure = 0;
    while (sure < margins.size() && margins[sure] > 10 * moved) ++sure;
    const std::string a = want[0]["completion"], b = got[0]["completion"];
    EXPECT_EQ(a.substr(0, sure), b.substr(0, sure)) << "margins moved by up to " << moved;
    EXPECT_GE(sure, 4u) << "near ties from the first tokens on: the test compares too little";
  }
}

TEST_F(Generate, SamplingIsReproducibleAndReducesToGreedy) {
  const std::string prompt = "--prompt 'the model routes '";
  const auto greedy = results(run_moetrain(generate(prompt + " --temperature 0")).output);
  ASSERT_EQ(greedy.size(), 1u);
  auto completion = [&](const std::string& flags) {
    const auto r = run_moetrain(generate(prompt + " " + flags));
    EXPECT_EQ(r.status, 0) << r.output;
    const auto j = results(r.output);
    return j.empty() ? std::string("<none>") : j[0]["completion"].get<std::string>();
  };
  const std::string a = completion("--temperature 1.2 --seed 5"), b = completion("--temperature 1.2 --seed 5");
  EXPECT_EQ(a, b);
  EXPECT_NE(a, completion("--temperature 1.2 --seed 6"));
  EXPECT_NE(a, greedy[0]["completion"].get<std::string>());
  EXPECT_EQ(completion("--temperature 1.2 --top-k 1 --seed 5"), greedy[0]["completion"].get<std::string>());
  EXPECT_EQ(completion("--temperature 1.2 --top-p 1e-9 --seed 5"), greedy[0]["completion"].get<std::string>());
}

TEST_F(Generate, APromptsFileGivesALineAPrompt) {
  test_util::write_text(dir / "prompts.jsonl", "{\"prompt\": \"the \"}\n\n{\"prompt\": \"experts and\"}\n");
  const auto r = run_moetrain(generate("--prompts " + (dir / "prompts.jsonl") + " --temperature 0"));
  ASSERT_EQ(r.status, 0) << r.output;
  const auto got = results(r.output);
  ASSERT_EQ(got.size(), 2u) << r.output;
  EXPECT_EQ(got[0]["prompt"], "the ");
  EXPECT_EQ(got[1]["prompt"], "experts and");
}

TEST_F(Generate, BadInputIsRefusedNamingIt) {
  struct Case {
    std::string flags, message;
  };
  test_util::write_text(dir / "empty.jsonl", "\n");
  test_util::write_text(dir / "bad.jsonl", "{\"text\": \"x\"}\n");
  const std::string long_prompt(70, 'a');  // the checkpoint's context is 64
  for (const Case& c : {
           Case{"--prompt x --load " + (dir / "nothing"), dir / "nothing"},
           Case{"--prompts " + (dir / "empty.jsonl"), "no prompt in it"},
           Case{"--prompts " + (dir / "bad.jsonl"), "line 1 is not a JSON object with a string \"prompt\""},
           Case{"--prompt " + long_prompt, "prompt 1 is 70 tokens, the model's context"},
           Case{"--prompt x --top-p 0", "--top-p must lie in (0, 1], got 0"},
           Case{"--prompt x --top-p 1.5", "--top-p must lie in (0, 1], got 1.5"},
           Case{"--prompt x --prompts " + (dir / "empty.jsonl"), "exactly one of --prompt TEXT and --prompts FILE"},
           Case{"--prompt x --max-new-tokens 0", "--max-new-tokens must be >= 1"},
       }) {
    SCOPED_TRACE(c.flags);
    const auto r = run_moetrain(generate(c.flags));
    EXPECT_NE(r.status, 0) << r.output;
    EXPECT_TRUE(contains(r.output, c.message)) << r.output;
  }
}

}  // namespace
}  // namespace mt
