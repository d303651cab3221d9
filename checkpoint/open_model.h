// A checkpoint's model on any layout, for eval and generate: one rank's
// share built (model/rank_model.h) and its weights loaded, rounded to T.
#pragma once

#include <memory>
#include <string>

#include "checkpoint/checkpoint_file.h"
#include "runtime/gemm_check.h"
#include "model/rank_model.h"

namespace mt {

// Collective over topo's world. path: the checkpoint file (resolve_checkpoint);
// cfg: its model (CheckpointInfo::model), its context possibly changed.
template <typename T>
std::unique_ptr<RankModel<T>> open_model(const std::string& path, const ModelConfig& cfg, const ModelLayout& layout,
                                         Topology& topo) {
  auto opened = std::make_unique<RankModel<T>>(checked_cpu_backend<T>(topo.world()), cfg, layout, topo);
  Transformer<T>& model = opened->model;
  load_checkpoint<T>(path, topo.world_mpi(), model.params(), nullptr, nullptr, nullptr,
                     {model.stage().begin, &model.router_state()});
  return opened;
}

}  // namespace mt
