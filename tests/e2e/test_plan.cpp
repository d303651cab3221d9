// `moetrain plan` through the binary: the GPT-4 figures from
// configs/gpt4-1.8t.toml alone, its table, and the per-rank bytes `train`
// logs against the plan of the same flags.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <cmath>
#include <map>
#include <regex>
#include <tuple>

#include "run_moetrain.h"

namespace mt {
namespace {

using nlohmann::json;
using test_util::run_moetrain;

const std::string kGpt4 = std::string(MT_SOURCE_DIR) + "/configs/gpt4-1.8t.toml";

// `moetrain plan ARGS --json`, parsed.
json plan_json(const std::string& args) {
  const auto r = run_moetrain("plan " + args + " --json");
  EXPECT_EQ(r.status, 0) << r.output;
  const size_t open = r.output.find('{');
  if (open == std::string::npos) {
    ADD_FAILURE() << "no JSON in: " << r.output;
    return json::object();
  }
  return json::parse(r.output.substr(open));
}

void expect_within(double value, double target, double tolerance, const std::string& what) {
  EXPECT_LE(std::abs(value - target), tolerance * target)
      << what << ": " << value << " is not within " << tolerance * 100 << "% of " << target;
}

double largest(const json& ranks, const char* key) {
  double x = 0;
  for (const json& r : ranks) x = std::max(x, r[key].get<double>());
  return x;
}

TEST(Plan, Gpt4ConfigReproducesThePublicFigures) {
  const json p = plan_json("--config " + kGpt4);
  ASSERT_TRUE(p.contains("parameters")) << p.dump();
  EXPECT_EQ(p["layout"]["tp"], 8);
  EXPECT_EQ(p["layout"]["pp"], 15);
  EXPECT_EQ(p["model"]["num_layers"], 120);
  EXPECT_EQ(p["model"]["num_experts"], 16);
  EXPECT_EQ(p["model"]["moe_router_topk"], 2);
  EXPECT_EQ(p["model"]["num_query_groups"], 1);
  EXPECT_EQ(p["model"]["seq_length"], 8192);
  const json& n = p["parameters"];
  expect_within(n["total"], 1.8e12, 0.05, "total parameters");
  expect_within(n["active"], 280e9, 0.05, "active parameters");
  expect_within(n["per_expert"], 111e9, 0.05, "parameters per expert");
  expect_within(n["shared"], 55e9, 0.05, "shared parameters");
  const json& f = p["flops_per_token"];
  expect_within(f["forward_2n"], 560e9, 0.05, "forward FLOPs per token");
  expect_within(f["dense_forward_2n"], 3.7e12, 0.05, "forward FLOPs of a dense 1.8T model");
  // bf16 weights (2 bytes, as fp16) of the largest GPU at TP8 x PP15.
  expect_within(largest(p["memory"]["ranks"], "weights_bytes"), 30e9, 0.05, "weights per GPU");
  expect_within(p["layout"]["batch_tokens"], 60e6, 0.05, "tokens a step");
  expect_within(p["tokens_per_expert_per_step"], 7.5e6, 0.05, "tokens per expert per step");

  // Served at TP8 x PP16 on 128 GPUs (16 stages: 4 + 14 x 8 + 4 layers).
  const json s = plan_json("--config " + kGpt4 +
                           " --serve --num-gpus 128 --pp 16 --decoder-first-pipeline-num-layers 4"
                           " --decoder-last-pipeline-num-layers 4");
  ASSERT_TRUE(s.contains("serve")) << s.dump();
  EXPECT_EQ(s["layout"]["dp"], 1);
  EXPECT_LT(s["serve"]["weights_bytes_fp16"].get<double>(), 30e9);
  EXPECT_LT(s["serve"]["weights_bytes_fp8"].get<double>(), 15e9);
  expect_within(s["serve"]["weights_bytes_fp16"], 30e9, 0.05, "fp16 serving weights per GPU");
  // Multi-query attention keeps 1 kv head of 96.
  EXPECT_DOUBLE_EQ(s["serve"]["kv_bytes_per_sequence_mha"].get<double>() /
                       s["serve"]["kv_bytes_per_sequence"].get<double>(),
                   96.0);
}

TEST(Plan, Gpt4RunTimeFollowsFromTheAssumedMfu) {
  const json p = plan_json("--config " + kGpt4);
  const json& t = p["time"];
  ASSERT_TRUE(t.is_object()) << p.dump();
  EXPECT_TRUE(t["mfu_assumed"].get<bool>());
  EXPECT_DOUBLE_EQ(t["mfu"].get<double>(), 0.34);
  // 13T tokens x training FLOPs a token at 34% of 25,200 A100s' bf16 peak;
  // the ramp-up does not change tokens/s at an assumed MFU.
  const double flops = p["flops_per_token"]["train"].get<double>() * 13e12;
  const double seconds = flops / (0.34 * 25200 * 312e12);
  expect_within(t["train_days"], seconds / 86400.0, 1e-3, "days");
  expect_within(t["cost"], seconds / 3600.0 * 25200 * 1.0, 1e-3, "cost at $1 a GPU-hour");
  // The public account: 90 to 100 days, about $63M.
  expect_within(t["train_days"], 95, 0.1, "days against the public 90 to 100");
  expect_within(t["cost"], 63e6, 0.05, "cost against the public $63M");
}

// The bytes each rank of `train` logs at start-up, keyed by (tp, pp, dp).
struct LoggedMemory {
  int64_t parameters, weights, gradients, optimizer, activations, workspace;
};
std::map<std::tuple<int, int, int>, LoggedMemory> logged_memory(const std::string& output) {
  std::map<std::tuple<int, int, int>, LoggedMemory> out;
  const std::regex line(
      R"(memory rank (\d+) \(tp (\d+), pp (\d+), dp (\d+)\): (\d+) parameters, )"
      R"(weights (\d+) B, gradients (\d+) B, optimizer (\d+) B, )"
      R"(activations (\d+) B a micro-batch, workspace (\d+) B)");
  for (std::sregex_iterator it(output.begin(), output.end(), line), end; it != end; ++it) {
    const std::smatch& m = *it;
    out[{std::stoi(m[2]), std::stoi(m[3]), std::stoi(m[4])}] = {std::stoll(m[5]), std::stoll(m[6]),
                                                                 std::stoll(m[7]), std::stoll(m[8]),
                                                                 std::stoll(m[9]), std::stoll(m[10])};
  }
  return out;
}

class PlanAgainstTrain : public ::testing::Test {
 protected:
  void SetUp() override { test_util::make_store(dir, "store", test_util::synthetic_text(30000, 8)); }
  // Trains 2 steps on `ranks` ranks with `layout`, plans the same flags, and
  // compares every rank's parameters, weights, gradients and optimizer
  // bytes, its activations a micro-batch and its workspace, and rank 0's TP
  // all-reduce, sequence-parallel and DP bytes a step with its metrics.
  void compare(const std::string& layout, int ranks) {
    const std::string flags = test_util::tiny_model_flags() + " --num-layers 4 --micro-batch-size 2 " + layout +
                              " --lr-warmup-samples 0 --data-path " + (dir / "store") +
                              " --train-iters 2 --log-interval 1 --metrics-file " + (dir / "metrics.jsonl");
    const auto train = run_moetrain("train " + flags, ranks);
    ASSERT_EQ(train.status, 0) << train.output;
    const auto logged = logged_memory(train.output);
    ASSERT_EQ(int(logged.size()), ranks) << train.output;
    const json plan = plan_json(flags + " --num-gpus " + std::to_string(ranks));
    int compared = 0;
    for (const auto& [where, mem] : logged) {
      const auto [tp, pp, dp] = where;
      SCOPED_TRACE(::testing::Message() << "tp " << tp << " pp " << pp << " dp " << dp);
      for (const json& r : plan["memory"]["ranks"]) {
        if (r["tp"] != tp || r["pp"] != pp) continue;
        EXPECT_EQ(r["parameters"].get<int64_t>(), mem.parameters);
        EXPECT_EQ(int64_t(r["weights_bytes"].get<double>()), mem.weights);
        EXPECT_EQ(int64_t(r["gradients_bytes"].get<double>()), mem.gradients);
        EXPECT_EQ(int64_t(r["optimizer_bytes"].get<double>()), mem.optimizer);
        EXPECT_EQ(int64_t(r["activations_per_micro_batch_bytes"].get<double>()), mem.activations);
        EXPECT_EQ(int64_t(r["workspace_bytes"].get<double>()), mem.workspace);
        ++compared;
      }
    }
    EXPECT_EQ(compared, ranks);
    // Rank 0's TP all-reduce, sequence-parallel and ZeRO-1 payloads of each
    // step (stage 0's, TP rank 0's).
    const auto records = test_util::read_metrics(dir / "metrics.jsonl");
    ASSERT_EQ(records.size(), 2u);
    const json& rank0 = plan["memory"]["ranks"][0];
    ASSERT_EQ(rank0["tp"], 0);
    ASSERT_EQ(rank0["pp"], 0);
    for (const json& record : records) {
      EXPECT_EQ(record["tp_allreduce_bytes"].get<double>(),
                plan["pipeline"]["stages"][0]["tp_bytes_per_step"].get<double>());
      EXPECT_EQ(record.value("tp_sp_bytes", 0.0), plan["pipeline"]["stages"][0]["tp_sp_bytes_per_step"].get<double>());
      EXPECT_EQ(record.value("dp_reduce_scatter_bytes", 0.0), rank0["dp_reduce_scatter_bytes"].get<double>());
      EXPECT_EQ(record.value("dp_allgather_bytes", 0.0), rank0["dp_all_gather_bytes"].get<double>());
    }
  }
  test_util::TempDir dir;
};

TEST_F(PlanAgainstTrain, TensorAndUnevenPipelineRanks) {
  compare("--tp 2 --pp 2 --decoder-first-pipeline-num-layers 1", 4);
}

TEST_F(PlanAgainstTrain, DataParallelRanksWithZeroOneShards) { compare("--pp 2", 4); }

// bf16 weights and activations, float32 gradients, master weights and moments.
TEST_F(PlanAgainstTrain, Bf16RanksWithMasterWeightShards) { compare("--tp 2 --bf16", 4); }

// Expert parallelism: DP4 = EP2 x expert-DP2, the experts padded and
// sharded over expert-DP, the rest over DP.
TEST_F(PlanAgainstTrain, ExpertParallelRanksWithTwoShardRegions) { compare("--ep 2", 4); }

// The MoE designs' pieces (docs/design.md section 3): gated MLPs, a head
// size of its own with normalised queries and keys, a dense layer among MoE
// ones of their own width, a gated shared expert, the expert bias; the
// first stage all MoE, the second dense and MoE.
TEST_F(PlanAgainstTrain, MoeDesignRanksWithDenseLayersAndASharedExpert) {
  compare("--num-query-groups 2 --kv-channels 24 --qk-layernorm --ffn-hidden-size 96 --swiglu "
          "--moe-ffn-hidden-size 32 --moe-layer-freq '[1,1,0,1]' --moe-shared-expert-intermediate-size 48 "
          "--moe-shared-expert-gate --moe-router-score-function sigmoid --moe-router-enable-expert-bias "
          "--tp 2 --pp 2 --decoder-first-pipeline-num-layers 2",
          4);
}

// Sequence parallelism: the residual stream's rows split over TP, its
// all-reduces turned into reduce-scatters and all-gathers, the norm gains'
// gradients partial; on one stage without recompute, the embedding's
// reduce-scatter and the LM head's gathers on the same ranks.
TEST_F(PlanAgainstTrain, SequenceParallelRanks) { compare("--tp 2 --sequence-parallel", 2); }

// With full recompute's second forward, a gated shared expert (its gate's
// all-reduce), and a stage boundary carrying each TP rank's rows.
TEST_F(PlanAgainstTrain, SequenceParallelRanksWithFullRecomputeAndAGatedSharedExpert) {
  compare("--tp 2 --pp 2 --sequence-parallel --recompute-granularity full --moe-shared-expert-intermediate-size 48 "
          "--moe-shared-expert-gate",
          4);
}

// In bf16 (the rounded gradients' buffers) with selective recompute, over DP 2.
TEST_F(PlanAgainstTrain, SequenceParallelRanksInBf16WithSelectiveRecompute) {
  compare("--tp 2 --sequence-parallel --recompute-granularity selective --bf16", 4);
}

// --grad-reduce-in-bf16 (docs/design.md section 8): bf16 gradients and
// their shard, the shard widened to float32, one layer's float32 gradients;
// over two replicas with two shard regions, and on one (the shard is the
// whole buffer).
TEST_F(PlanAgainstTrain, Bf16GradientRanksWithTwoShardRegions) {
  compare("--ep 2 --pp 2 --bf16 --grad-reduce-in-bf16", 4);
}
TEST_F(PlanAgainstTrain, Bf16GradientRanksOfOneReplica) { compare("--tp 2 --bf16 --grad-reduce-in-bf16", 2); }

TEST(Plan, TableNamesTheFiguresAndTheFit) {
  const auto r = run_moetrain("plan --config " + kGpt4 + " --gpu h200 --mfu 0 --search-max-tp 8");
  ASSERT_EQ(r.status, 0) << r.output;
  for (const char* part : {"active per token", "per expert", "forward, 2 x active", "pipeline bubble",
                           "TP all-reduces", "DP ZeRO-1", "MFU", "(estimated)", "days", "of h200"})
    EXPECT_NE(r.output.find(part), std::string::npos) << "no \"" << part << "\" in:\n" << r.output;
  // Sequence parallelism: said in the layout, its traffic beside the all-reduces.
  const auto sp = run_moetrain("plan --config " + kGpt4 + " --gpu h200 --mfu 0 --sequence-parallel");
  ASSERT_EQ(sp.status, 0) << sp.output;
  for (const char* part : {"sequence parallel", "TP all-reduces", "TP SP", "reduce-scatters and all-gathers"})
    EXPECT_NE(sp.output.find(part), std::string::npos) << "no \"" << part << "\" in:\n" << sp.output;
  const auto bad = run_moetrain("plan --config " + kGpt4 + " --num-gpus 100");
  EXPECT_NE(bad.status, 0);
  EXPECT_NE(bad.output.find("--num-gpus 100 is not divisible by --tensor-model-parallel-size 8"), std::string::npos)
      << bad.output;
}

}  // namespace
}  // namespace mt
