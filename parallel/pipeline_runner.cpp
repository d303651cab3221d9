#include "parallel/pipeline_runner.h"

#include <mpi.h>

#include <algorithm>

#include "runtime/check.h"

namespace mt {

template <typename T>
PipelineRunner<T>::PipelineRunner(PipelineStage<T>& model, const PipelineGroup& pp, PipelineSchedule schedule)
    : model_(model), pp_(pp), schedule_(schedule) {
  MT_CHECK(pp.stages == 1 || pp.group != nullptr, "a pipeline of {} stages needs its group", pp.stages);
}

template <typename T>
DeviceBuffer<T>& PipelineRunner<T>::grad_send(int slot) {
  while (int(grad_send_.size()) <= slot) {
    // Sized for the largest micro-batch the model takes.
    grad_send_.emplace_back(model_.backend(), model_.boundary_elements(model_.max_batch()));
    out_send_.emplace_back();
    grad_send_req_.emplace_back();
  }
  return grad_send_[slot];
}

template <typename T>
MicroBatchLoss PipelineRunner<T>::step(const std::vector<const int32_t*>& tokens, int B,
                                       double ce_scale, double aux_scale, PipelineStats* stats,
                                       const GradsReady* ready) {
  const int m = int(tokens.size());
  const size_t n = model_.boundary_elements(B);  // elements a transfer
  const bool first = pp_.stage == 0, last = pp_.stage == pp_.stages - 1;
  if (!last && grad_recv_.size() < n) grad_recv_ = DeviceBuffer<T>(model_.backend(), n);

  PipelineStats local;
  auto wait = [&](Request& r) {
    if (!r.pending()) return;
    const double start = MPI_Wtime();
    pp_.group->wait(r);
    local.wait_seconds += MPI_Wtime() - start;
  };

  std::vector<int> slot_of(m, -1);
  std::vector<int> free_slots;  // slots whose micro-batch finished its backward
  int slots_used = 0, live = 0;
  MicroBatchLoss total;
  const std::vector<PipelineStep> steps = pipeline_steps(schedule_, pp_.stage, pp_.stages, m);
  size_t last_backward = 0;
  for (size_t k = 0; k < steps.size(); ++k)
    if (steps[k].kind == PipelineStep::Backward) last_backward = k;
  for (size_t k = 0; k < steps.size(); ++k) {
    const PipelineStep& s = steps[k];
    const int i = s.micro_batch;
    if (s.kind == PipelineStep::Forward) {
      int slot;
      if (free_slots.empty()) {
        slot = slots_used++;
      } else {
        slot = free_slots.back();
        free_slots.pop_back();
      }
      slot_of[i] = slot;
      grad_send(slot);
      ++live;
      local.peak_live = std::max(local.peak_live, live);
      // The slot's previous output must have left before it is overwritten.
      wait(out_send_[slot]);
      if (!first) {
        Request r = pp_.group->irecv(model_.stage_input(slot), n, dtype_of<T>(), pp_.stage - 1, i);
        wait(r);
      }
      const MicroBatchLoss l = model_.forward_stage(slot, tokens[i], B);
      total.ce_sum += l.ce_sum;
      total.aux += l.aux;
      total.z += l.z;
      total.tokens += l.tokens;
      if (!last) out_send_[slot] = pp_.group->isend(model_.stage_output(slot), n, dtype_of<T>(), pp_.stage + 1, i);
    } else {
      const int slot = slot_of[i];
      if (!last) {
        Request r = pp_.group->irecv(grad_recv_.data(), n, dtype_of<T>(), pp_.stage + 1, i);
        wait(r);
      }
      model_.backward_stage(slot, last ? nullptr : grad_recv_.data(), ce_scale, aux_scale,
                            k == last_backward ? ready : nullptr);
      if (!first) {
        wait(grad_send_req_[slot]);
        model_.backend().copy(grad_send_[slot].data(), model_.stage_input_grad(), n);
        grad_send_req_[slot] = pp_.group->isend(grad_send_[slot].data(), n, dtype_of<T>(), pp_.stage - 1, i);
      }
      free_slots.push_back(slot);
      --live;
    }
  }
  for (auto& r : out_send_) wait(r);
  for (auto& r : grad_send_req_) wait(r);
  if (stats) *stats = local;
  return total;
}

template <typename T>
MicroBatchLoss PipelineRunner<T>::forward(const int32_t* tokens, int B) {
  const size_t n = model_.boundary_elements(B);
  const bool first = pp_.stage == 0, last = pp_.stage == pp_.stages - 1;
  if (!first) {
    Request r = pp_.group->irecv(model_.stage_input(0), n, dtype_of<T>(), pp_.stage - 1, 0);
    pp_.group->wait(r);
  }
  const MicroBatchLoss loss = model_.forward_stage(0, tokens, B);
  if (!last) {
    Request r = pp_.group->isend(model_.stage_output(0), n, dtype_of<T>(), pp_.stage + 1, 0);
    pp_.group->wait(r);
  }
  return loss;
}

template class PipelineRunner<float>;
template class PipelineRunner<double>;
template class PipelineRunner<bf16>;

}  // namespace mt
