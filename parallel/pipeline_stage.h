// What a pipeline runs: one stage of a model, whose forward and backward
// passes of a micro-batch keep their activations in a numbered slot until
// the backward. The transformer implements it (model/transformer.h); the
// runner (parallel/pipeline_runner.h) moves activations between stages.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>

#include "runtime/backend.h"

namespace mt {

struct MicroBatchLoss {
  double ce_sum = 0.0;  // summed over the micro-batch's tokens
  double aux = 0.0;     // load-balancing loss, summed over layers
  double z = 0.0;       // router z-loss, summed over layers
  int64_t tokens = 0;
};

// Called during a backward pass with `from`: every gradient at flat offsets
// [from, end) is final for the step (the step's last backward pass), so its
// reduction can start while the rest of the pass runs.
using GradsReady = std::function<void(size_t from)>;

template <typename T>
class PipelineStage {
 public:
  virtual ~PipelineStage() = default;
  virtual Backend<T>& backend() = 0;
  // Elements of the activation a stage passes on for a micro-batch of B
  // samples, [B S, d]; max_batch(): the largest B the stage takes.
  virtual size_t boundary_elements(int B) const = 0;
  virtual int max_batch() const = 0;
  // tokens: host [B, S+1]. The first stage embeds them; a later stage reads
  // its input from stage_input(slot), filled by the caller. Returns the
  // stage's loss: CE on the last stage, the aux losses of its layers.
  virtual MicroBatchLoss forward_stage(int slot, const int32_t* tokens, int B) = 0;
  // Backward of  ce_scale * sum(CE) + aux_scale * sum(aux)  for the slot's
  // micro-batch: the last stage starts from the loss, an earlier one from
  // grad_output = d loss / d stage output. Leaves d loss / d stage input in
  // stage_input_grad(). ready, when given, is told as gradients are done.
  virtual void backward_stage(int slot, const T* grad_output, double ce_scale, double aux_scale,
                              const GradsReady* ready) = 0;
  virtual T* stage_input(int slot) = 0;         // [B S, d]
  virtual const T* stage_output(int slot) = 0;  // [B S, d]
  virtual const T* stage_input_grad() const = 0;
};

}  // namespace mt
