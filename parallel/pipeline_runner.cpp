#include "parallel/pipeline_runner.h"

#include <fmt/format.h>
#include <mpi.h>

#include <algorithm>

#include "runtime/check.h"
#include "runtime/watchdog.h"

namespace mt {

template <typename T>
PipelineRunner<T>::PipelineRunner(PipelineStage<T>& model, const ProcessGroup& pp, PipelineSchedule schedule)
    : model_(model), pp_(pp), schedule_(schedule) {
  MT_CHECK(pp.size == 1 || pp.comm != nullptr, "a pipeline of {} stages needs its group", pp.size);
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
  const bool first = pp_.rank == 0, last = pp_.rank == pp_.size - 1;
  if (!last && grad_recv_.size() < n) grad_recv_ = DeviceBuffer<T>(model_.backend(), n);

  PipelineStats local;
  // what: the transfer, peer_stage: the stage at its other end.
  auto wait = [&](Request& r, const char* what, int micro_batch, int peer_stage) {
    if (!r.pending()) return;
    const WaitingFor waiting(fmt::format("the pipeline {} of micro-batch {} with stage {} (world rank {})", what,
                                         micro_batch, peer_stage, pp_.comm->world_rank_of(peer_stage)));
    const double start = MPI_Wtime();
    pp_.comm->wait(r);
    local.wait_seconds += MPI_Wtime() - start;
  };
  std::vector<int> out_micro_batch, grad_micro_batch;  // of each slot's send in flight

  std::vector<int> slot_of(m, -1);
  std::vector<int> free_slots;  // slots whose micro-batch finished its backward
  int slots_used = 0, live = 0;
  MicroBatchLoss total;
  const std::vector<PipelineStep> steps = pipeline_steps(schedule_, pp_.rank, pp_.size, m);
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
      out_micro_batch.resize(std::max(out_micro_batch.size(), size_t(slot) + 1), 0);
      wait(out_send_[slot], "send of the activations", out_micro_batch[slot], pp_.rank + 1);
      if (!first) {
        Request r = pp_.comm->irecv(model_.stage_input(slot), n, dtype_of<T>(), pp_.rank - 1, i);
        wait(r, "receive of the activations", i, pp_.rank - 1);
      }
      const MicroBatchLoss l = model_.forward_stage(slot, tokens[i], B);
      total.ce_sum += l.ce_sum;
      total.aux += l.aux;
      total.z += l.z;
      total.tokens += l.tokens;
      if (!last) {
        out_send_[slot] = pp_.comm->isend(model_.stage_output(slot), n, dtype_of<T>(), pp_.rank + 1, i);
        out_micro_batch[slot] = i;
      }
    } else {
      const int slot = slot_of[i];
      if (!last) {
        Request r = pp_.comm->irecv(grad_recv_.data(), n, dtype_of<T>(), pp_.rank + 1, i);
        wait(r, "receive of the gradient", i, pp_.rank + 1);
      }
      model_.backward_stage(slot, last ? nullptr : grad_recv_.data(), ce_scale, aux_scale,
                            k == last_backward ? ready : nullptr);
      if (!first) {
        grad_micro_batch.resize(std::max(grad_micro_batch.size(), size_t(slot) + 1), 0);
        wait(grad_send_req_[slot], "send of the gradient", grad_micro_batch[slot], pp_.rank - 1);
        model_.backend().copy(grad_send_[slot].data(), model_.stage_input_grad(), n);
        grad_send_req_[slot] = pp_.comm->isend(grad_send_[slot].data(), n, dtype_of<T>(), pp_.rank - 1, i);
        grad_micro_batch[slot] = i;
      }
      free_slots.push_back(slot);
      --live;
    }
  }
  for (size_t s = 0; s < out_send_.size(); ++s)
    wait(out_send_[s], "send of the activations", s < out_micro_batch.size() ? out_micro_batch[s] : 0, pp_.rank + 1);
  for (size_t s = 0; s < grad_send_req_.size(); ++s)
    wait(grad_send_req_[s], "send of the gradient", s < grad_micro_batch.size() ? grad_micro_batch[s] : 0,
         pp_.rank - 1);
  if (stats) *stats = local;
  return total;
}

template <typename T>
MicroBatchLoss PipelineRunner<T>::forward(const int32_t* tokens, int B) {
  return forward_with(model_.boundary_elements(B), [&] { return model_.forward_stage(0, tokens, B); });
}

template <typename T>
MicroBatchLoss PipelineRunner<T>::forward_with(size_t n, const std::function<MicroBatchLoss()>& stage_forward) {
  const bool first = pp_.rank == 0, last = pp_.rank == pp_.size - 1;
  if (!first) {
    Request r = pp_.comm->irecv(model_.stage_input(0), n, dtype_of<T>(), pp_.rank - 1, 0);
    const WaitingFor waiting(fmt::format("the pipeline receive of the activations with stage {} (world rank {})",
                                         pp_.rank - 1, pp_.comm->world_rank_of(pp_.rank - 1)));
    pp_.comm->wait(r);
  }
  const MicroBatchLoss loss = stage_forward();
  if (!last) {
    Request r = pp_.comm->isend(model_.stage_output(0), n, dtype_of<T>(), pp_.rank + 1, 0);
    const WaitingFor waiting(fmt::format("the pipeline send of the activations with stage {} (world rank {})",
                                         pp_.rank + 1, pp_.comm->world_rank_of(pp_.rank + 1)));
    pp_.comm->wait(r);
  }
  return loss;
}

template class PipelineRunner<float>;
template class PipelineRunner<double>;
template class PipelineRunner<bf16>;

}  // namespace mt
