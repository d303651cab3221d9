// Context parallelism's attention (Megatron's --context-parallel-size,
// Transformer Engine's load-balanced layout): each sequence of S tokens is
// cut into 2 CP chunks of c = S / (2 CP) tokens, and CP rank i holds chunks
// i and 2 CP - 1 - i of every sample, so that under the causal mask every
// rank has the same share of the work (an early chunk sees few keys, its
// partner at the end many). A rank's rows of a sample are those 2c tokens in
// order of position; its q [B*2c, H*hd], k and v [B*2c, G*hd] are rows by
// sample, then by local position, as everywhere in moetrain.
//
// Attention runs as a ring (docs/design.md section 9): each rank keeps its
// queries while the key/value blocks pass around the CP group, each sent on
// before the block held is computed on, so that the transfer hides behind
// the compute; each block's output is merged into the running result by its
// log-sum-exp (Backend::attention_merge). The backward pass runs the ring
// again with the final output and lse: every block's share of dq, dk and dv
// is then exactly the kernel's (P = exp(scores - lse), D = rowsum(dO O)),
// and the dk, dv accumulators travel with their block until they arrive back
// at its owner. Under bf16 the running output and lse are float32, the
// output rounded once at the end; dq and the travelling dk, dv are bf16,
// each block's share added in bf16 as gradient kernels add (CP roundings
// where one rank's attention has one).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "parallel/process_group.h"
#include "runtime/backend.h"

namespace mt {

// The positions in the whole sample of CP rank cp_rank's 2c rows of a
// sample of `seq` tokens: chunk cp_rank, then chunk 2 cp_size - 1 - cp_rank
// (ascending, as AttentionShape's block form needs). seq must divide by
// 2 cp_size.
std::vector<int32_t> cp_chunk_positions(int cp_rank, int cp_size, int seq);

// The data loader's cut: rows[i] = the sample's row at position i of
// cp_chunk_positions, each row `width` elements (a token id: 1; a q row:
// H*hd). rows [seq / cp_size, width], sample [seq, width].
template <typename E>
void cp_rows_of_sample(E* rows, const E* sample, int cp_rank, int cp_size, int seq, size_t width = 1) {
  const std::vector<int32_t> pos = cp_chunk_positions(cp_rank, cp_size, seq);
  for (size_t i = 0; i < pos.size(); ++i)
    for (size_t e = 0; e < width; ++e) rows[i * width + e] = sample[size_t(pos[i]) * width + e];
}

// What a ring message carries; with the ring's id and the micro-batch it
// makes the message's tag (ring_tag).
enum class RingMessage { ForwardKv = 0, BackwardKv = 1, Grads = 2 };

// The tag of a ring's messages: rings of different ids (one a layer) and
// calls of different micro-batches (mod 8, more than a pipeline keeps in
// flight) never match each other's messages on the CP group. Within one
// tag, k before v and step after step: MPI keeps the order of messages
// between two ranks. Below 32768, the least MPI_TAG_UB MPI allows.
int ring_tag(int id, int micro_batch, RingMessage what);
constexpr int kMaxRingIds = 1024;

// Ring attention over one CP group, its buffers allocated once for calls of
// up to `shape.batch` samples of `shape.seq` rows each (this rank's 2c rows
// a sample, so the whole sequence is shape.seq * cp.size tokens) and the
// shape's heads. A group of one is plain attention: the kernel called
// directly, bit for bit.
template <typename T>
class RingAttention {
 public:
  using Acc = acc_t<T>;
  // id: this ring's messages' (one a layer), 0 <= id < kMaxRingIds.
  RingAttention(Backend<T>& be, const ProcessGroup& cp, const AttentionShape& shape, int id = 0);

  // As Backend::attention_forward and attention_backward over this rank's
  // rows, with the keys of the whole sequence: out [B*2c, H*hd], lse [B, H,
  // 2c] (the whole sequence's log-sum-exp of each row). shape: as given to
  // the constructor, any batch up to its own, and doc_start (document
  // masks) in positions of the whole sample for this rank's rows; its block
  // form fields are the ring's to set. backward adds to dq, dk and dv (dk and
  // dv of this rank's own k and v rows) and takes forward's out and lse.
  // micro_batch: for the tags only.
  void forward(T* out, Acc* lse, const T* q, const T* k, const T* v, const AttentionShape& shape,
               int micro_batch = 0);
  void backward(T* dq, T* dk, T* dv, const T* dout, const T* out, const Acc* lse, const T* q, const T* k,
                const T* v, const AttentionShape& shape, int micro_batch = 0);

  // Seconds this rank spent blocked on the ring's messages (the transfer
  // time compute did not hide), summed over calls.
  double wait_seconds = 0.0;

 private:
  void check(const AttentionShape& a) const;
  size_t kv_elements(int batch) const { return size_t(batch) * shape_.seq * shape_.kv_heads * shape_.head_dim; }
  // Waits for request r (a transfer with group rank `peer`), saying what it
  // waits for while blocked, for the watchdog.
  void wait(Request& r, const char* what, int step, int peer);
  // Posts the transfer of a key/value block: this rank's (k, v) to the next
  // rank, the previous rank's into `into` ([k | v], 2 kv_elements(batch)).
  void pass_kv(Request (&sent)[4], const T* k, const T* v, T* into, size_t n, int tag);
  // Waits for the four transfers pass_kv posted at `step`.
  void wait_kv(Request (&sent)[4], int step);

  Backend<T>& be_;
  ProcessGroup cp_;
  AttentionShape shape_;
  int id_;
  int next_ = 0, prev_ = 0;  // group ranks the blocks go to and come from
  // Every rank's row positions [shape.seq], on the device: block j's k_pos.
  std::vector<DeviceBuffer<T, int32_t>> positions_;
  DeviceBuffer<T> kv_[2];        // received blocks, [k | v], double-buffered
  DeviceBuffer<T> block_out_;    // a block's output [B*2c, H*hd]
  DeviceBuffer<Acc> block_lse_;  // and its lse [B, H, 2c]
  DeviceBuffer<Acc> run_out_;    // under bf16: the running output in float32
  DeviceBuffer<T> grads_[2];     // a block's [dk | dv] accumulator in flight, double-buffered
  DeviceBuffer<T> part_;         // this rank's share of a block's [dk | dv]
};

extern template class RingAttention<float>;
extern template class RingAttention<double>;
extern template class RingAttention<bf16>;

}  // namespace mt
