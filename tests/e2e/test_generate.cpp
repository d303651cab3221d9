// `moetrain generate` (docs/design.md section 11): greedy continuations are
// the same on every layout, with the key/value cache or without, batched or
// alone, and in the independent PyTorch model; sampling is reproducible
// from its seed and reduces to greedy at top-k 1 or a tiny top-p; bad input
// is refused.
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

// Two greedy continuations of one prompt by computations that add the same
// products in other orders (layouts, the cache, batching, PyTorch): the
// margins move by float32 rounding. A token whose margin over the
// runner-up is within 10 times the largest such move could flip; compare
// up to the first.
void expect_same_greedy(const nlohmann::json& want, const nlohmann::json& got) {
  const std::vector<double> margins = want.at("margins"), other = got.at("margins");
  double moved = 1e-6;
  for (size_t i = 0; i < std::min(margins.size(), other.size()); ++i)
    moved = std::max(moved, std::abs(margins[i] - other[i]));
  size_t sure = 0;
  while (sure < margins.size() && margins[sure] > 10 * moved) ++sure;
  const std::string a = want.at("completion"), b = got.at("completion");
  EXPECT_EQ(a.substr(0, sure), b.substr(0, sure)) << "margins moved by up to " << moved;
  if (sure == margins.size()) {
    EXPECT_EQ(a, b) << "no near tie, yet the lengths differ";
  }
  EXPECT_GE(sure, std::min<size_t>(4, margins.size())) << "near ties from the first tokens on: the test compares too little";
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
  for (const auto& [flags, ranks] :
       {std::pair<std::string, int>{"--tp 2", 2}, {"--pp 2", 2}, {"--tp 2 --pp 2", 4}, {"--ep 2", 2}}) {
    SCOPED_TRACE(flags);
    const auto r = run_moetrain(generate(prompt + " " + flags), ranks);
    ASSERT_EQ(r.status, 0) << r.output;
    const auto got = results(r.output);
    ASSERT_EQ(got.size(), 1u) << r.output;
    expect_same_greedy(want[0], got[0]);
  }
}

// Prompts of mixed lengths, with their own output lengths.
const char* kMixedPrompts =
    "{\"prompt\": \"the \", \"max_new_tokens\": 5}\n"
    "{\"prompt\": \"experts and\"}\n"
    "{\"prompt\": \"a longer prompt about the model and its experts \", \"max_new_tokens\": 3}\n"
    "{\"prompt\": \"x\", \"max_new_tokens\": 12}\n"
    "{\"prompt\": \"routing tokens \"}\n"
    "{\"prompt\": \"and so\", \"max_new_tokens\": 7}\n";

// The steps generate reports having taken ("... in N steps, ...").
int steps_of(const std::string& output) {
  const size_t at = output.find(" steps, ");
  if (at == std::string::npos) return -1;
  return std::stoi(output.substr(output.rfind(' ', at - 1) + 1));
}

// kMixedPrompts continued greedily with `flags` on `ranks` ranks: one JSON
// line a prompt, in order (none when the run fails); `output`: the run's.
std::vector<nlohmann::json> continue_mixed_prompts(const std::string& generate_flags, int ranks,
                                                   std::string* output = nullptr) {
  const auto r = run_moetrain(generate_flags, ranks);
  EXPECT_EQ(r.status, 0) << r.output;
  const auto got = results(r.output);
  EXPECT_EQ(got.size(), 6u) << r.output;
  if (output) *output = r.output;
  return r.status == 0 && got.size() == 6u ? got : std::vector<nlohmann::json>{};
}

// Greedy tokens from the cache, one position of work each, are those of the
// full forward pass over every prefix, on one rank and on TP x PP.
TEST_F(Generate, TheCacheGivesTheTokensOfTheFullPass) {
  test_util::write_text(dir / "prompts.jsonl", kMixedPrompts);
  const std::string prompts = "--prompts " + (dir / "prompts.jsonl") + " --temperature 0 --max-batch 1";
  const auto want = continue_mixed_prompts(generate(prompts + " --no-kv-cache"), 1);
  ASSERT_FALSE(want.empty());
  for (const auto& [flags, ranks] : {std::pair<std::string, int>{"", 1}, {"--tp 2 --pp 2", 4}}) {
    SCOPED_TRACE(flags);
    std::string output;
    const auto got = continue_mixed_prompts(generate(prompts + " " + flags), ranks, &output);
    ASSERT_FALSE(got.empty());
    // The tiny model: 2 layers, 1 kv head of 16, 64 positions, float32; 4 query heads.
    EXPECT_TRUE(contains(output, "kv cache: 0.02 MiB a sequence (2 layers x 1 kv heads x 64 positions x 16 x 2 x 4 "
                                 "bytes); 0.06 MiB with G = H = 4"))
        << output;
    for (size_t p = 0; p < want.size(); ++p) {
      SCOPED_TRACE("prompt " + std::to_string(p + 1));
      EXPECT_EQ(got[p]["prompt"], want[p]["prompt"]);
      expect_same_greedy(want[p], got[p]);
    }
  }
}

// Up to 3 sequences at once: each prompt gets the continuation it gets
// alone. Continuous batching lets the next prompt into a finished
// sequence's slot at once, so it takes fewer steps than static batching,
// which takes fewer than one prompt at a time.
TEST_F(Generate, BatchingGivesEachPromptItsContinuationAlone) {
  test_util::write_text(dir / "prompts.jsonl", kMixedPrompts);
  const std::string prompts = "--prompts " + (dir / "prompts.jsonl") + " --temperature 0";
  const auto want = continue_mixed_prompts(generate(prompts + " --max-batch 1"), 1);
  ASSERT_FALSE(want.empty());
  const int max_new[] = {5, 24, 3, 12, 24, 7};  // kMixedPrompts' own, else --max-new-tokens 24
  std::vector<int> steps;
  for (const std::string flags : {"--max-batch 1", "--max-batch 3 --batching static", "--max-batch 3"}) {
    SCOPED_TRACE(flags);
    std::string output;
    const auto got = continue_mixed_prompts(generate(prompts + " " + flags), 1, &output);
    ASSERT_FALSE(got.empty());
    for (size_t p = 0; p < want.size(); ++p) {
      SCOPED_TRACE("prompt " + std::to_string(p + 1));
      expect_same_greedy(want[p], got[p]);
      EXPECT_LE(got[p]["tokens"].get<int>(), max_new[p]);
    }
    steps.push_back(steps_of(output));
  }
  EXPECT_GT(steps[0], steps[1]) << "static batching took as many steps as one prompt at a time";
  EXPECT_GT(steps[1], steps[2]) << "continuous batching took as many steps as static batching";
}

// The independent PyTorch model of scripts/pytorch_reference/torch_model.py,
// loaded from the checkpoint with h5py and decoding greedily from the full
// pass over each prefix, continues the prompt as the cache does.
TEST_F(Generate, TorchGreedyDecodeOfTheCheckpointMatches) {
  if (std::system("/usr/bin/python3 -c 'import h5py, torch' >/dev/null 2>&1") != 0)
    GTEST_SKIP() << "no torch or h5py for /usr/bin/python3 (scripts/install_deps.sh --torch)";
  const auto ours = run_moetrain(generate("--prompt 'the model routes ' --temperature 0"));
  ASSERT_EQ(ours.status, 0) << ours.output;
  const std::string script =
      std::string(MT_SOURCE_DIR) + "/scripts/pytorch_reference/checkpoint_to_torch.py";
  const auto py = test_util::run_shell("OMP_NUM_THREADS=1 /usr/bin/python3 " + script + " " + checkpoint_ +
                                       " --generate 'the model routes ' --max-new-tokens 24");
  ASSERT_EQ(py.status, 0) << py.output;
  const std::string last = py.output.substr(py.output.rfind('{'));
  const auto got = results(ours.output);
  ASSERT_EQ(got.size(), 1u) << ours.output;
  expect_same_greedy(nlohmann::json::parse(last), got[0]);
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
  test_util::write_text(dir / "zero.jsonl", "{\"prompt\": \"x\"}\n{\"prompt\": \"y\", \"max_new_tokens\": 0}\n");
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
           Case{"--prompt x --max-batch 0", "--max-batch must be >= 1, got 0"},
           Case{"--prompt x --batching dynamic", "--batching must be continuous or static, got 'dynamic'"},
           Case{"--prompts " + (dir / "zero.jsonl"), "line 2: \"max_new_tokens\" must be an integer >= 1, got 0"},
       }) {
    SCOPED_TRACE(c.flags);
    const auto r = run_moetrain(generate(c.flags));
    EXPECT_NE(r.status, 0) << r.output;
    EXPECT_TRUE(contains(r.output, c.message)) << r.output;
  }
}

}  // namespace
}  // namespace mt
