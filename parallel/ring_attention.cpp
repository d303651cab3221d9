#include "parallel/ring_attention.h"

#include <fmt/format.h>
#include <mpi.h>

#include <limits>
#include <type_traits>

#include "runtime/check.h"
#include "runtime/watchdog.h"

namespace mt {

std::vector<int32_t> cp_chunk_positions(int cp_rank, int cp_size, int seq) {
  MT_CHECK(cp_size >= 1 && cp_rank >= 0 && cp_rank < cp_size, "CP rank {} of a group of {}", cp_rank, cp_size);
  MT_CHECK(seq % (2 * cp_size) == 0, "context parallelism over {} ranks cuts a sequence into {} chunks: {} tokens do not divide",
           cp_size, 2 * cp_size, seq);
  const int c = seq / (2 * cp_size);
  std::vector<int32_t> pos;
  pos.reserve(size_t(2) * c);
  for (int chunk : {cp_rank, 2 * cp_size - 1 - cp_rank})
    for (int i = 0; i < c; ++i) pos.push_back(int32_t(chunk * c + i));
  return pos;
}

int ring_tag(int id, int micro_batch, RingMessage what) {
  MT_CHECK(id >= 0 && id < kMaxRingIds, "ring attention id {} is outside [0, {})", id, kMaxRingIds);
  return ((id * 8 + micro_batch % 8) * 4) + int(what);  // < 1024 * 8 * 4 = 32768
}

template <typename T>
RingAttention<T>::RingAttention(Backend<T>& be, const ProcessGroup& cp, const AttentionShape& shape, int id)
    : be_(be), cp_(cp), shape_(shape), id_(id) {
  ring_tag(id, 0, RingMessage::ForwardKv);  // checks the id
  MT_CHECK(cp.size == 1 || cp.comm != nullptr, "ring attention over {} ranks needs their group", cp.size);
  MT_CHECK(shape.kv_seq == 0 && !shape.q_pos && !shape.k_pos, "ring attention sets the block form itself");
  if (cp.size == 1) return;  // plain attention: no buffers
  next_ = (cp.rank + 1) % cp.size;
  prev_ = (cp.rank + cp.size - 1) % cp.size;
  for (int r = 0; r < cp.size; ++r) {
    const std::vector<int32_t> pos = cp_chunk_positions(r, cp.size, shape.seq * cp.size);
    positions_.emplace_back(be, pos.size());
    be.int_from_host(positions_.back().data(), pos.data(), pos.size());
  }
  const size_t kv = kv_elements(shape.batch), rows = size_t(shape.batch) * shape.seq;
  for (int i = 0; i < 2; ++i) {
    kv_[i] = DeviceBuffer<T>(be, 2 * kv);
    grads_[i] = DeviceBuffer<T>(be, 2 * kv);
  }
  part_ = DeviceBuffer<T>(be, 2 * kv);
  block_out_ = DeviceBuffer<T>(be, rows * shape.heads * shape.head_dim);
  block_lse_ = DeviceBuffer<Acc>(be.acc(), rows * shape.heads);
  if constexpr (!std::is_same_v<T, Acc>) run_out_ = DeviceBuffer<Acc>(be.acc(), rows * shape.heads * shape.head_dim);
}

template <typename T>
void RingAttention<T>::check(const AttentionShape& a) const {
  MT_CHECK(a.seq == shape_.seq && a.batch >= 1 && a.batch <= shape_.batch && a.heads == shape_.heads &&
               a.kv_heads == shape_.kv_heads && a.head_dim == shape_.head_dim,
           "ring attention built for up to {} samples of {} rows, {} heads, {} kv heads of {}, called with {} of {}, "
           "{}, {} of {}",
           shape_.batch, shape_.seq, shape_.heads, shape_.kv_heads, shape_.head_dim, a.batch, a.seq, a.heads,
           a.kv_heads, a.head_dim);
  MT_CHECK(a.kv_seq == 0 && !a.q_pos && !a.k_pos, "ring attention sets the block form itself");
}

template <typename T>
void RingAttention<T>::wait(Request& r, const char* what, int step, int peer) {
  if (cp_.comm->test(r)) return;  // done already: nothing to report or time
  const WaitingFor waiting(fmt::format("ring attention {} (id {}), step {} of {}, with group rank {} (world rank {}) in {}",
                                       what, id_, step + 1, cp_.size, peer, cp_.comm->world_rank_of(peer),
                                       cp_.comm->name()));
  const double start = MPI_Wtime();
  cp_.comm->wait(r);
  wait_seconds += MPI_Wtime() - start;
}

template <typename T>
void RingAttention<T>::wait_kv(Request (&sent)[4], int step) {
  wait(sent[0], "receiving a key/value block", step, prev_);
  wait(sent[1], "receiving a key/value block", step, prev_);
  wait(sent[2], "sending a key/value block", step, next_);
  wait(sent[3], "sending a key/value block", step, next_);
}

template <typename T>
void RingAttention<T>::pass_kv(Request (&sent)[4], const T* k, const T* v, T* into, size_t n, int tag) {
  Communicator& c = *cp_.comm;
  sent[0] = c.irecv(into, n, dtype_of<T>(), prev_, tag);
  sent[1] = c.irecv(into + n, n, dtype_of<T>(), prev_, tag);
  sent[2] = c.isend(k, n, dtype_of<T>(), next_, tag);
  sent[3] = c.isend(v, n, dtype_of<T>(), next_, tag);
}

template <typename T>
void RingAttention<T>::forward(T* out, Acc* lse, const T* q, const T* k, const T* v, const AttentionShape& shape,
                               int micro_batch) {
  check(shape);
  const int P = cp_.size;
  if (P == 1) return be_.attention_forward(out, lse, q, k, v, shape);
  const size_t n = kv_elements(shape.batch), rows = size_t(shape.batch) * shape.seq;
  const size_t out_size = rows * shape.heads * shape.head_dim, lse_size = rows * shape.heads;
  const int tag = ring_tag(id_, micro_batch, RingMessage::ForwardKv);
  // The running output: out itself where it is Acc, else float32 rounded once at the end.
  Acc* run = nullptr;
  if constexpr (std::is_same_v<T, Acc>) {
    run = out;
  } else {
    run = run_out_.data();
  }
  be_.acc().fill(run, Acc(0), out_size);
  be_.acc().fill(lse, -std::numeric_limits<Acc>::infinity(), lse_size);
  AttentionShape a = shape;
  a.kv_seq = shape.seq;
  a.q_pos = positions_[cp_.rank].data();
  const T *kb = k, *vb = v;  // the block held: this rank's own first
  for (int step = 0; step < P; ++step) {
    const int owner = (cp_.rank - step + P) % P;
    T* next = kv_[step % 2].data();  // the next block lands here; the held one is in the other buffer
    Request sent[4];
    if (step + 1 < P) pass_kv(sent, kb, vb, next, n, tag);
    a.k_pos = positions_[owner].data();
    be_.attention_forward(block_out_.data(), block_lse_.data(), q, kb, vb, a);
    be_.attention_merge(run, lse, block_out_.data(), block_lse_.data(), shape);
    mark_progress();
    wait_kv(sent, step);
    kb = next;
    vb = next + n;
  }
  if constexpr (!std::is_same_v<T, Acc>) be_.round_from_acc(out, run, out_size);
}

template <typename T>
void RingAttention<T>::backward(T* dq, T* dk, T* dv, const T* dout, const T* out, const Acc* lse, const T* q,
                                const T* k, const T* v, const AttentionShape& shape, int micro_batch) {
  check(shape);
  const int P = cp_.size;
  if (P == 1) return be_.attention_backward(dq, dk, dv, dout, out, lse, q, k, v, shape);
  const size_t n = kv_elements(shape.batch);
  const int kv_tag = ring_tag(id_, micro_batch, RingMessage::BackwardKv);
  const int grad_tag = ring_tag(id_, micro_batch, RingMessage::Grads);
  Communicator& c = *cp_.comm;
  AttentionShape a = shape;
  a.kv_seq = shape.seq;
  a.q_pos = positions_[cp_.rank].data();
  const T *kb = k, *vb = v;
  Request grad_sent[2];  // the send out of grads_[i]
  for (int step = 0; step < P; ++step) {
    const int owner = (cp_.rank - step + P) % P;
    // The held block's [dk | dv] accumulator: started here at step 0; later
    // it arrives from the previous rank, which had the block one step
    // before, while this rank computes its own share into part_.
    T* grads = grads_[step % 2].data();
    wait(grad_sent[step % 2], "sending key/value gradients", step, next_);  // sent two steps ago
    Request grad_in;
    if (step > 0) grad_in = c.irecv(grads, 2 * n, dtype_of<T>(), prev_, grad_tag);
    T* next = kv_[step % 2].data();
    Request sent[4];
    if (step + 1 < P) pass_kv(sent, kb, vb, next, n, kv_tag);
    T* share = step == 0 ? grads : part_.data();
    be_.fill(share, T(0), 2 * n);
    a.k_pos = positions_[owner].data();
    be_.attention_backward(dq, share, share + n, dout, out, lse, q, kb, vb, a);
    mark_progress();
    if (step > 0) {
      wait(grad_in, "receiving key/value gradients", step, prev_);
      be_.axpy(2 * n, T(1), share, grads);
    }
    // On to the rank that holds this block next; after the last step, that
    // is its owner.
    grad_sent[step % 2] = c.isend(grads, 2 * n, dtype_of<T>(), next_, grad_tag);
    wait_kv(sent, step);
    kb = next;
    vb = next + n;
  }
  // This rank's own block comes home from the previous rank, which held it
  // last, with every rank's share added.
  T* home = grads_[P % 2].data();
  wait(grad_sent[P % 2], "sending key/value gradients", P - 1, next_);
  Request home_in = c.irecv(home, 2 * n, dtype_of<T>(), prev_, grad_tag);
  wait(home_in, "receiving this rank's key/value gradients", P - 1, prev_);
  be_.axpy(n, T(1), home, dk);
  be_.axpy(n, T(1), home + n, dv);
  wait(grad_sent[(P - 1) % 2], "sending key/value gradients", P - 1, next_);
}

template class RingAttention<float>;
template class RingAttention<double>;
template class RingAttention<bf16>;

}  // namespace mt
