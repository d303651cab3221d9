// One rank's share of a model on a layout, and what runs it: the backend,
// the transformer's TP x stage part (with its experts under EP) and the
// pipeline runner that moves micro-batches between the stages. train,
// eval and generate all build their model this way; eval and generate
// from a checkpoint (checkpoint/open_model.h).
#pragma once

#include <memory>

#include "model/recompute.h"
#include "model/transformer.h"
#include "parallel/pipeline_runner.h"
#include "parallel/topology.h"

namespace mt {

// How the model is laid over the pipeline and what a pass holds.
struct ModelLayout {
  int micro_batch = 1;                                // the largest batch a pass takes
  int first_stage_layers = 0, last_stage_layers = 0;  // 0: an even split (stage_span)
  RecomputeConfig recompute = {};
  PipelineSchedule schedule = PipelineSchedule::OneFOneB;
  TransformerOptions options = {};  // sequence parallelism, gradients in T (training only); cp from the topology
};

// The options with the topology's CP group.
inline TransformerOptions with_context_parallel(TransformerOptions options, const Topology& topo) {
  options.cp = topo.cp();
  return options;
}

template <typename T>
struct RankModel {
  RankModel(std::unique_ptr<Backend<T>> backend, const ModelConfig& cfg, const ModelLayout& layout, Topology& topo)
      : be(std::move(backend)),
        model(*be, cfg, layout.micro_batch, topo.tp(),
              stage_span(cfg.num_layers, topo.pp().rank, topo.pp().size, layout.first_stage_layers,
                         layout.last_stage_layers),
              topo.dp_cp().size, layout.recompute, topo.ep(), with_context_parallel(layout.options, topo)),
        pipeline(model, topo.pp(), layout.schedule) {}

  std::unique_ptr<Backend<T>> be;
  Transformer<T> model;
  PipelineRunner<T> pipeline;
};

}  // namespace mt
