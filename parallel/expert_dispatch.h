// Expert dispatch: moving each kept (token, expert) assignment of a
// micro-batch to the rows its expert reads, and the experts' outputs back
// to their tokens, forward and backward. The MoE layer (model/moe_layer.h)
// runs the experts (model/experts.h) on those rows in between.
//
// Without expert parallelism every expert is on this rank: the expert rows
// are the micro-batch's packed rows (grouped by expert). With EP, EP rank j
// holds experts [j E/EP, (j+1) E/EP) (docs/design.md, "Expert parallelism"):
// each rank exchanges with its EP group how many rows it sends to each
// expert, then the rows themselves by a variable-size all-to-all; the rows
// a rank receives are regrouped by its local expert (expert, then source
// rank, then token), and the outputs go back by the reverse all-to-all.
#pragma once

#include <cstdint>
#include <vector>

#include "parallel/process_group.h"
#include "runtime/backend.h"
#include "runtime/communicator.h"

namespace mt {

// A micro-batch's kept assignments as rows grouped by expert (row order:
// expert, then token).
template <typename T>
struct PackedRows {
  const int32_t* token = nullptr;             // [rows] device: the token of each row
  const acc_t<T>* weight = nullptr;           // [rows] device: its routing weight (float32 under bf16)
  const std::vector<int32_t>* expert_offset;  // [E+1] host: expert e's rows [offset[e], offset[e+1])
  int rows() const { return expert_offset->back(); }
};

// Who sends how many rows to whom for one micro-batch of one layer, kept
// from the forward pass for the backward pass.
struct ExpertExchange {
  std::vector<int> send_rows;            // [EP] rows this rank sends to each EP rank
  std::vector<int> recv_rows;            // [EP] rows it receives from each
  std::vector<int32_t> recv_counts;      // [EP * local experts] rows from rank p for local expert e
  std::vector<int32_t> expert_offset;    // [local experts + 1] the local experts' rows, expert-major
  int rows() const { return expert_offset.back(); }
};

// Traffic of the all-to-alls, for the logs and the benchmark.
struct DispatchStats {
  uint64_t bytes_sent = 0;  // row and row-count bytes this rank sent to other ranks
  uint64_t calls = 0;
  double seconds = 0.0;
};

template <typename T>
class ExpertDispatch {
 public:
  // experts: E of the model; max_packed: most kept rows of a micro-batch on
  // this rank; max_rows: most rows this rank's experts can receive
  // (expert_rows_bound, model/router.h). ep: the EP group.
  ExpertDispatch(Backend<T>& be, int experts, size_t max_packed, size_t max_rows, int d,
                 const ProcessGroup& ep = {});

  int first_expert() const { return ep_.rank * local_experts_; }
  int local_experts() const { return local_experts_; }
  bool sends() const { return ep_.size > 1; }

  // Tells the EP group how many of this micro-batch's rows go to each of
  // its experts (collective over EP); the layout of the rows this rank's
  // experts receive.
  ExpertExchange exchange(const PackedRows<T>& p);
  // x[expert row] = m[token]: the expert rows' inputs, [ex.rows(), d].
  void dispatch(const PackedRows<T>& p, const ExpertExchange& ex, const T* m, T* x);
  // y: the experts' outputs [ex.rows(), d]; returned: [p.rows(), d], where
  // the outputs of this rank's packed rows arrive under EP (y itself
  // without). out[token] += weight * returned[row], out [T, d].
  void combine(const PackedRows<T>& p, const ExpertExchange& ex, const T* y, T* returned, T* out);
  // Backward of combine: dweight[row] = dout[token] . returned[row], and
  // the expert rows' dy = weight * dout[token], [ex.rows(), d].
  void combine_backward(const PackedRows<T>& p, const ExpertExchange& ex, const T* dout, const T* returned,
                        T* dy, acc_t<T>* dweight);
  // Backward of dispatch: dm[token] += dx[expert row].
  void dispatch_backward(const PackedRows<T>& p, const ExpertExchange& ex, const T* dx, T* dm);

  DispatchStats stats;  // accumulated; the caller resets it

 private:
  // Between this rank's packed rows and its experts' rows, over the EP group.
  void to_experts(const ExpertExchange& ex, const T* packed, T* rows);
  void to_origin(const ExpertExchange& ex, const T* rows, T* packed);
  // Each (source rank, local expert) run of rows between the order the
  // all-to-all delivers (source-major) and the experts' (expert-major).
  void regroup(const ExpertExchange& ex, const T* from, T* to, bool to_expert_major);
  void all_to_all(const T* send, const std::vector<int>& send_rows, T* recv, const std::vector<int>& recv_rows);
  void scatter_by_expert(const PackedRows<T>& p, const T* rows, const acc_t<T>* weight, T* out);

  Backend<T>& be_;
  int experts_, local_experts_, d_;
  ProcessGroup ep_;
  DeviceBuffer<T> packed_;  // [max_packed, d] this rank's rows on their way out or back (EP only)
  DeviceBuffer<T> staged_;  // [max_rows, d] received rows in source-major order (EP only)
};

extern template class ExpertDispatch<float>;
extern template class ExpertDispatch<double>;
extern template class ExpertDispatch<bf16>;

}  // namespace mt
