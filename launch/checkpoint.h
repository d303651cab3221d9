// HDF5 checkpoints (docs/design.md section 6): SAVE/iter_NNNNNNN/checkpoint.h5
// holding every tensor whole, in its logical shape, as float32, with the
// AdamW moments under /optim, and SAVE/latest naming the newest complete one.
// A checkpoint is written into a temporary directory and renamed into place
// once complete, and `latest` is replaced by rename after that, so a crash
// never leaves a half checkpoint under a real name.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

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

struct SaveStats {
  double seconds = 0.0;  // from the first rank entering to `latest` replaced
  uint64_t bytes = 0;    // of the file
};

// Collective over topo.world(). `config` is the full run configuration;
// each entry of `resume` (the schedule, ramp-up, data and RNG positions)
// becomes a root attribute holding its JSON. The AdamW moments are ZeRO-1
// shards (grad_sync's layout): each replica gathers them, and every rank
// writes its share of its TP block's rows. keep_last > 0: afterwards, only
// the newest keep_last checkpoints are kept.
SaveStats save_checkpoint(const std::string& save_dir, Topology& topo, const ModelConfig& model,
                          Parameters<float>& params, AdamW<float>& optim, GradSync<float>& grad_sync,
                          const TrainState& state, uint64_t seed, const nlohmann::json& config,
                          const nlohmann::json& resume, int keep_last = 0);

// The checkpoint file a --load argument means: a checkpoint.h5, an
// iter_NNNNNNN directory, or a save directory. In a save directory, the
// newest complete checkpoint: the one `latest` names or, when that file is
// truncated or corrupted, the newest readable one before it; a checkpoint
// newer than `latest` (its save did not finish) is skipped. Each skip is
// described in *warnings. Throws naming what is missing. Reads files; call
// it on one rank and share the answer.
std::string resolve_checkpoint(const std::string& load, std::vector<std::string>* warnings = nullptr);

// Collective: rank 0 of `world` resolves --load and prints a warning for
// each checkpoint it skipped; every rank gets the path.
std::string resolve_checkpoint(const std::string& load, Communicator& world);

// Why `path` cannot be a checkpoint to resume from (it does not open as
// HDF5, lacks the root attributes or the model tensors), or "" if it can.
std::string checkpoint_problem(const std::string& path);

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
