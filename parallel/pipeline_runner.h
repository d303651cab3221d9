// One optimizer step's forward and backward passes on one pipeline stage:
// the micro-batches run in the order of the schedule (pipeline_schedule.h),
// activations go to the next stage and gradients to the previous one by
// non-blocking point-to-point transfers over the communicator interface.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "parallel/pipeline_schedule.h"
#include "parallel/pipeline_stage.h"
#include "parallel/process_group.h"
#include "runtime/communicator.h"

namespace mt {

struct PipelineStats {
  int peak_live = 0;          // micro-batches whose activations were alive at once
  double wait_seconds = 0.0;  // blocked waiting for a neighbour's transfer
};

template <typename T>
class PipelineRunner {
 public:
  PipelineRunner(PipelineStage<T>& model, const ProcessGroup& pp, PipelineSchedule schedule);

  // tokens[i]: host [B, S+1] of micro-batch i. Returns this stage's summed
  // loss: CE on the last stage, the aux losses of its layers. ready, when
  // given, follows the step's last backward pass (PipelineStage::backward_stage).
  MicroBatchLoss step(const std::vector<const int32_t*>& tokens, int B, double ce_scale,
                      double aux_scale, PipelineStats* stats = nullptr,
                      const GradsReady* ready = nullptr);
  // Forward only (evaluation): one micro-batch through every stage. Returns
  // this stage's loss (CE on the last stage).
  MicroBatchLoss forward(const int32_t* tokens, int B);
  // Forward only, of n boundary elements in slot 0, stage_forward running
  // this stage's part (generation's steps: Transformer::decode_stage).
  MicroBatchLoss forward_with(size_t n, const std::function<MicroBatchLoss()>& stage_forward);

 private:
  DeviceBuffer<T>& grad_send(int slot);

  PipelineStage<T>& model_;
  ProcessGroup pp_;
  PipelineSchedule schedule_;
  DeviceBuffer<T> grad_recv_;                  // [T, d]
  std::vector<DeviceBuffer<T>> grad_send_;     // [slots][T, d]
  std::vector<Request> out_send_, grad_send_req_;  // [slots]
};

extern template class PipelineRunner<float>;
extern template class PipelineRunner<double>;
extern template class PipelineRunner<bf16>;

}  // namespace mt
