// HDF5 checkpoints (DESIGN.md section 6): SAVE/iter_NNNNNNN/checkpoint.h5
// holding every tensor whole, in its logical shape, as float32, with the
// AdamW moments under /optim, and SAVE/latest naming the newest complete one.
// A checkpoint is written into a temporary directory and renamed into place
// once complete, and `latest` is replaced by rename after that, so a crash
// never leaves a half checkpoint under a real name.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>

#include "model/config.h"
#include "model/parameters.h"
#include "optim/adamw.h"
#include "parallel/grad_sync.h"
#include "runtime/topology.h"

namespace mt {

constexpr int64_t kCheckpointFormatVersion = 1;

// Where training stands; saved as root attributes.
struct TrainState {
  int64_t iteration = 0;
  int64_t consumed_samples = 0;
  int64_t consumed_tokens = 0;
};

nlohmann::json model_config_to_json(const ModelConfig& cfg);
ModelConfig model_config_from_json(const nlohmann::json& j);  // throws naming a missing key

std::string checkpoint_dir_name(int64_t iteration);  // "iter_0000042"

// Collective over topo.world(). `config` is the full run configuration.
// The AdamW moments are ZeRO-1 shards (grad_sync's layout); each replica
// gathers them, and every rank writes its share of its TP block's rows.
void save_checkpoint(const std::string& save_dir, Topology& topo, const ModelConfig& model,
                     Parameters<float>& params, AdamW<float>& optim, GradSync<float>& grad_sync,
                     const TrainState& state, uint64_t seed, const nlohmann::json& config);

// The checkpoint file a --load argument means: DIR with a `latest` file,
// DIR/iter_NNNNNNN, or a checkpoint.h5 itself. Throws naming what is missing.
std::string resolve_checkpoint(const std::string& load);

struct CheckpointInfo {
  std::string path;
  TrainState state;
  int64_t adam_step = 0;
  uint64_t seed = 0;
  nlohmann::json config;  // the full run configuration it was saved with
};

// Reads the attributes only (e.g. to build the model before loading).
CheckpointInfo read_checkpoint_info(const std::string& path, MPI_Comm comm);

// Loads weights (and, when optim is not null, the AdamW moments of the
// shard grad_sync assigns this rank). Every tensor must have the shape the
// model expects: a mismatch names the tensor and both shapes.
void load_checkpoint(const std::string& path, MPI_Comm comm, Parameters<float>& params,
                     AdamW<float>* optim = nullptr, const GradSync<float>* grad_sync = nullptr);

}  // namespace mt
