// The checkpoint file (docs/design.md section 6, docs/checkpoint-format.md):
// one HDF5 file holding every tensor whole, in its logical shape, as float32,
// the AdamW moments under /optim, and the root attributes. Every rank of the
// world writes its share of its block in one collective MPI-IO write, so the
// file is the same whatever the layout that wrote it, and any layout reads it.
// Where checkpoints live and which one to load is checkpoint/checkpoint_dir.h's.
#pragma once

#include <mpi.h>
#include <nlohmann/json.hpp>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "model/config.h"
#include "model/parameters.h"
#include "model/router.h"
#include "optim/adamw.h"
#include "optim/master_weights.h"
#include "tokenizer/tokenizer.h"
#include "parallel/grad_sync.h"
#include "parallel/topology.h"

namespace mt {

constexpr int64_t kCheckpointFormatVersion = 1;

// The root attributes a save writes beyond the tensors.
struct CheckpointAttributes {
  int64_t iteration = 0;  // where training stands: optimizer steps done,
  int64_t consumed_samples = 0;  // samples and tokens consumed
  int64_t consumed_tokens = 0;
  uint64_t seed = 0;
  nlohmann::json config;  // the run configuration
  nlohmann::json resume;  // each entry (schedule, ramp-up, data, RNG) becomes an attribute holding its JSON
  std::string saved_at;   // the same on every rank (rank 0's clock)
  // The tokenizer the model reads and writes text with: the attribute
  // `tokenizer` (its type and options) and its files' bytes as uint8
  // datasets /tokenizer/<role>. Null: none recorded.
  std::shared_ptr<const TokenizerSpec> tokenizer = nullptr;
};

// What routing keeps of a stage's MoE layers between steps (RouterState:
// the expert bias, global_aux_loss's shares), saved beside the weights as
// /model/layers/{l}/expert_bias and /model/layers/{l}/global_aux_share,
// float32 [E], not trained parameters (NaN shares: no step has set them).
struct StageRouterState {
  int first_layer = 0;                         // the stage's first layer
  std::vector<RouterState>* layers = nullptr;  // [stage layers]; null: none (a dense model)
};

// The router state's dataset names of the whole model, layer by layer.
std::vector<std::string> router_state_datasets(const ModelConfig& model);

// Collective over topo's world: writes `file`. The AdamW moments are ZeRO-1
// shards (grad_sync's layout): each replica gathers them, and every rank
// writes its share of its TP block's rows. The weights written are float32:
// the model's own, or under bf16 the master weights (master, required then).
template <typename T>
void write_checkpoint_file(const std::string& file, Topology& topo, const ModelConfig& model,
                           Parameters<T>& params, AdamW<float>& optim, GradSync<float>& grad_sync,
                           const CheckpointAttributes& attributes, MasterWeights<T>* master = nullptr,
                           const StageRouterState& router = {});

// A copy of what a checkpoint holds, for a save that writes while training
// goes on (--async-save): the float32 weights and both AdamW moments in the
// flat layout (the moments gathered from the ZeRO-1 shards), and Adam's step.
struct CheckpointSnapshot {
  std::vector<float> weights, exp_avg, exp_avg_sq;  // [params.padded_size()]
  int64_t adam_step = 0;
  std::vector<RouterState> router;  // the stage's, copied
  int router_first_layer = 0;
};

// Collective over the replicas (the moments' all-gather): fills `into`,
// whose buffers are reused from one save to the next (allocating and
// faulting in fresh ones costs more than the copy).
template <typename T>
void snapshot_checkpoint(Parameters<T>& params, AdamW<float>& optim, GradSync<float>& grad_sync,
                         MasterWeights<T>* master, const StageRouterState& router, CheckpointSnapshot& into);

// Collective over `comm` (topo's world, or a duplicate of it): writes
// `file` from a snapshot, the same file write_checkpoint_file writes.
template <typename T>
void write_checkpoint_snapshot(const std::string& file, MPI_Comm comm, const Topology& topo, const ModelConfig& model,
                               const Parameters<T>& params, const CheckpointSnapshot& snapshot,
                               const CheckpointAttributes& attributes);

// Why `path` cannot be a checkpoint to resume from (it does not open as
// HDF5, lacks the root attributes or the model tensors), or "" if it can.
// Reads on the calling rank alone.
std::string checkpoint_problem(const std::string& path);

struct CheckpointInfo {
  std::string path;
  int64_t iteration = 0, consumed_samples = 0, consumed_tokens = 0;
  int64_t adam_step = 0;
  uint64_t seed = 0;
  nlohmann::json config;  // the full run configuration it was saved with
  ModelConfig model;      // config["model"], checked
  nlohmann::json skip_guard;  // which steps the run would skip (training/step_guard.h); null in older checkpoints
};

// Reads the attributes only (e.g. to build the model before loading). Every
// attribute is checked (present, of its type, JSON that parses, counts that
// are not negative, a model config that validates): a bad one throws
// mt::Error naming the file and the attribute.
CheckpointInfo read_checkpoint_info(const std::string& path, MPI_Comm comm);

// The tokenizer the checkpoint records (its files checked against their
// checksums); a checkpoint without one was trained on bytes
// (ByteTokenizer). Collective over comm.
TokenizerSpec read_checkpoint_tokenizer(const std::string& path, MPI_Comm comm);

// Loads weights (and, when optim is not null, the AdamW moments of the
// shard grad_sync assigns this rank). Every tensor must have the shape the
// model expects: a mismatch names the tensor and both shapes. Every block
// of the tensors loaded is checked against its checksum (checkpoint/hdf5_file.h):
// damage throws DamagedFile on every rank, naming the blocks. The float32
// weights go to master when given (the optimizer's, under bf16 a float32
// copy of the shard), and to the model's weights, rounded to T.
template <typename T>
void load_checkpoint(const std::string& path, MPI_Comm comm, Parameters<T>& params,
                     AdamW<float>* optim = nullptr, const GradSync<float>* grad_sync = nullptr,
                     MasterWeights<T>* master = nullptr, const StageRouterState& router = {});

}  // namespace mt
