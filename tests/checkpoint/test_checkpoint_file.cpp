// The checkpoint file in-process: what one layout writes, any layout reads
// back bit for bit (weights, both AdamW moments, attributes), and a tensor
// of another shape is refused naming it. Under mpirun the layouts are every
// TP x PP x DP the world size allows, against a file written by one rank.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <memory>

#include "checkpoint/checkpoint_file.h"
#include "model/config.h"
#include "runtime/cpu_backend.h"
#include "test_util.h"

namespace mt {
namespace {

// Heads, F and V divisible by 2; a width that leaves the ZeRO-1 shards padded.
ModelConfig tiny_config() {
  return ModelConfig{.vocab_size = 62, .hidden_size = 20, .num_layers = 2, .num_heads = 2, .num_query_groups = 1,
                     .ffn_hidden_size = 18, .num_experts = 4, .router_topk = 2, .seq_length = 8};
}

// What a checkpoint of the seeds below holds, at logical index i of tensor t.
constexpr uint64_t kWeightSeed = 11, kExpAvgSeed = 12, kExpAvgSqSeed = 13;
float logical_value(uint64_t seed, const ParamTensor& t, uint64_t i) {
  const double v = initial_value(seed, t, i);
  return float(seed == kExpAvgSqSeed ? std::abs(v) : v);
}

// One rank's share of a model, its ZeRO-1 gradient sync and its optimizer,
// as `train` builds them.
struct RankModel {
  RankModel(Topology& topo, const ModelConfig& cfg)
      : tp(topo.tp()),
        params(*be, cfg, tp, stage_span(cfg.num_layers, topo.coords().pp, topo.pp().size, 0, 0), topo.dp().size),
        grad_sync(*be, params.padded_size(), {}, tp, topo.dp(), 100),
        optim(*be, AdamWConfig{}, shard_segments(params.tensors, grad_sync.shard(), tp.rank), grad_sync.shard_size(),
              {}) {}

  // The flat buffer whose every element is logical_value(seed, ...).
  std::vector<float> flat(uint64_t seed) const {
    std::vector<float> out(params.padded_size(), 0.0f);
    for (const ParamTensor& t : params.tensors)
      for (size_t i = 0; i < t.numel; ++i) out[t.offset + i] = logical_value(seed, t, t.logical_index(i));
    return out;
  }
  std::vector<float> shard(uint64_t seed) const {
    std::vector<float> out(grad_sync.shard_size());
    grad_sync.flat_to_shard(flat(seed).data(), out.data());
    return out;
  }
  void fill_known_values() {
    const std::vector<float> values = flat(kWeightSeed);
    std::copy(values.begin(), values.end(), params.values.data());
    for (auto [seed, moment] : {std::pair{kExpAvgSeed, &optim.exp_avg()}, {kExpAvgSqSeed, &optim.exp_avg_sq()}}) {
      const std::vector<float> s = shard(seed);
      std::copy(s.begin(), s.end(), moment->data());
    }
    optim.set_step_count(7);
  }
  void clear() {
    std::fill(params.values.data(), params.values.data() + params.padded_size(), 0.0f);
    std::fill(optim.exp_avg().data(), optim.exp_avg().data() + optim.shard_size(), 0.0f);
    std::fill(optim.exp_avg_sq().data(), optim.exp_avg_sq().data() + optim.shard_size(), 0.0f);
    optim.set_step_count(0);
  }
  // Bit for bit what fill_known_values() put in, on this rank's share.
  void expect_known_values(const std::string& where) {
    const std::vector<float> values = flat(kWeightSeed);
    for (const ParamTensor& t : params.tensors)
      ASSERT_EQ(0, std::memcmp(values.data() + t.offset, params.values.data() + t.offset, t.numel * sizeof(float)))
          << where << ": weights of " << t.name;
    const std::pair<uint64_t, const DeviceBuffer<float>*> moments[] = {{kExpAvgSeed, &optim.exp_avg()},
                                                                     {kExpAvgSqSeed, &optim.exp_avg_sq()}};
    for (auto [seed, moment] : moments)
      ASSERT_EQ(shard(seed), std::vector<float>(moment->data(), moment->data() + moment->size()))
          << where << ": moment of seed " << seed;
    EXPECT_EQ(optim.step_count(), 7) << where;
  }

  std::unique_ptr<Backend<float>> be = make_cpu_backend<float>();
  ProcessGroup tp;
  Parameters<float> params;
  GradSync<float> grad_sync;
  AdamW<float> optim;
};

// The run's config as `train` saves it: the model's section and a flag.
nlohmann::json known_config() { return {{"lr", 0.001}, {"model", model_config_to_json(tiny_config())}}; }

CheckpointAttributes known_attributes() {
  return {5, 80, 640, 1234, known_config(), {{"rampup", {{"global_batch", 16}}}}, "2026-12-01T00:00:00Z"};
}

// A file path every rank of the world agrees on, in the directory rank 0 owns.
std::string shared_path(const test_util::TempDir* rank0_dir, const std::string& name) {
  std::string path = rank0_dir ? *rank0_dir / name : std::string();
  MpiCommunicator world(MPI_COMM_WORLD);
  static_cast<Communicator&>(world).broadcast(path, 0);
  return path;
}

TEST(CheckpointFile, RoundTripAtOneRankIsBitIdentical) {
  test_util::TempDir dir;
  Topology topo(MPI_COMM_SELF, {1, 1});
  RankModel m(topo, tiny_config());
  m.fill_known_values();
  write_checkpoint_file(dir / "c.h5", topo, tiny_config(), m.params, m.optim, m.grad_sync, known_attributes());
  m.clear();
  EXPECT_EQ(checkpoint_problem(dir / "c.h5"), "");
  const CheckpointInfo info = read_checkpoint_info(dir / "c.h5", MPI_COMM_SELF);
  EXPECT_EQ(info.iteration, 5);
  EXPECT_EQ(info.consumed_samples, 80);
  EXPECT_EQ(info.consumed_tokens, 640);
  EXPECT_EQ(info.adam_step, 7);
  EXPECT_EQ(info.seed, 1234u);
  EXPECT_EQ(info.config, known_config());
  EXPECT_EQ(model_config_to_json(info.model), model_config_to_json(tiny_config()));
  load_checkpoint(dir / "c.h5", MPI_COMM_SELF, m.params, &m.optim, &m.grad_sync);
  m.expect_known_values("one rank");
}

TEST(CheckpointFile, ATensorOfAnotherShapeIsRefusedNamingIt) {
  test_util::TempDir dir;
  Topology topo(MPI_COMM_SELF, {1, 1});
  RankModel written(topo, tiny_config());
  write_checkpoint_file(dir / "c.h5", topo, tiny_config(), written.params, written.optim, written.grad_sync,
                        known_attributes());
  ModelConfig wider = tiny_config();
  wider.ffn_hidden_size = 22;
  RankModel reader(topo, wider);
  test_util::expect_error([&] { load_checkpoint(dir / "c.h5", MPI_COMM_SELF, reader.params); },
                          {"tensor 'model/layers/0/experts/w1' has shape [4, 18, 20], the model expects [4, 22, 20]"});
}

// Every (TP, PP) whose replica size divides the world, DP the rest.
std::vector<TopologyConfig> layouts(int world) {
  std::vector<TopologyConfig> out;
  for (int tp : {1, 2})
    for (int pp : {1, 2})
      if (world % (tp * pp) == 0) out.push_back({tp, pp});
  return out;
}

TEST(CheckpointFileLayouts, WhatOneLayoutWritesAnotherReadsBitForBit) {
  int world = 1, rank = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  std::unique_ptr<test_util::TempDir> dir = rank == 0 ? std::make_unique<test_util::TempDir>() : nullptr;
  const std::string one_rank_file = shared_path(dir.get(), "one_rank.h5");
  if (rank == 0) {
    Topology self(MPI_COMM_SELF, {1, 1});
    RankModel m(self, tiny_config());
    m.fill_known_values();
    write_checkpoint_file(one_rank_file, self, tiny_config(), m.params, m.optim, m.grad_sync, known_attributes());
  }
  MPI_Barrier(MPI_COMM_WORLD);
  for (const TopologyConfig& layout : layouts(world)) {
    const std::string where = "TP" + std::to_string(layout.tensor_parallel) + " x PP" +
                              std::to_string(layout.pipeline_parallel) + " of " + std::to_string(world) + " ranks";
    Topology topo(MPI_COMM_WORLD, layout);
    RankModel m(topo, tiny_config());
    load_checkpoint(one_rank_file, MPI_COMM_WORLD, m.params, &m.optim, &m.grad_sync);
    m.expect_known_values("read at " + where);

    // And back: this layout writes, one rank reads.
    const std::string layout_file = shared_path(dir.get(), "layout.h5");
    m.clear();
    m.fill_known_values();
    write_checkpoint_file(layout_file, topo, tiny_config(), m.params, m.optim, m.grad_sync, known_attributes());
    if (rank == 0) {
      Topology self(MPI_COMM_SELF, {1, 1});
      RankModel one(self, tiny_config());
      load_checkpoint(layout_file, MPI_COMM_SELF, one.params, &one.optim, &one.grad_sync);
      one.expect_known_values("written at " + where);
    }
    MPI_Barrier(MPI_COMM_WORLD);
  }
}

}  // namespace
}  // namespace mt
