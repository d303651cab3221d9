// The communicator interface: the collectives the parallel layers use, over
// one process group. MpiCommunicator fills it with MPI; a NCCL communicator
// fills it for device memory on the CUDA backend.
#pragma once

#include <mpi.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "runtime/bfloat16.h"

namespace mt {

enum class DType { F32, F64, BF16, I32, I64, U8 };
enum class ReduceOp { Sum, Max };

template <typename T>
constexpr DType dtype_of();
template <>
constexpr DType dtype_of<float>() { return DType::F32; }
template <>
constexpr DType dtype_of<double>() { return DType::F64; }
template <>
constexpr DType dtype_of<bf16>() { return DType::BF16; }
template <>
constexpr DType dtype_of<int32_t>() { return DType::I32; }
template <>
constexpr DType dtype_of<int64_t>() { return DType::I64; }

// A non-blocking transfer or collective in flight; wait() completes it.
struct Request {
  MPI_Request mpi = MPI_REQUEST_NULL;
  bool pending() const { return mpi != MPI_REQUEST_NULL; }
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual void all_reduce(void* buf, size_t n, DType type, ReduceOp op) = 0;
  virtual void broadcast(void* buf, size_t n, DType type, int root) = 0;
  virtual void barrier() = 0;
  // Point-to-point between ranks of this group (pipeline stages). The
  // buffer must stay untouched until wait() returns.
  virtual Request isend(const void* buf, size_t n, DType type, int peer, int tag) = 0;
  virtual Request irecv(void* buf, size_t n, DType type, int peer, int tag) = 0;
  virtual void wait(Request& request) = 0;
  // Non-blocking collectives (ZeRO-1's buckets). reduce_scatter sums
  // `send` ([size() * count]) over the group into `recv` ([count]), rank r
  // getting the r-th part; all_gather is in place: rank r's `count` elements
  // at buf + r * count go to every rank. Buffers stay untouched until done.
  virtual Request ireduce_scatter(const void* send, void* recv, size_t count, DType type) = 0;
  virtual Request iall_gather(void* buf, size_t count, DType type) = 0;
  virtual void all_gather(void* buf, size_t count, DType type) = 0;  // blocking, in place
  // Blocking reduce_scatter (sequence parallelism's, on the model's path).
  virtual void reduce_scatter(const void* send, void* recv, size_t count, DType type) = 0;
  // Variable-size all-to-all of rows of row_elems elements (expert
  // parallelism's token dispatch): send_rows[q] rows go to rank q, taken
  // back to back from `send` in rank order; recv_rows[p] rows arrive from
  // rank p, back to back in `recv` in rank order. Blocking.
  virtual void all_to_all_rows(const void* send, const int* send_rows, void* recv, const int* recv_rows,
                               size_t row_elems, DType type) = 0;
  // Drives pending requests forward (MPI progresses non-blocking
  // collectives only inside MPI calls); true when `request` is complete.
  virtual bool test(Request& request) = 0;
  // The group in words, for reports of a rank that waits in it, e.g. "TP
  // group (world ranks 0, 1)"; and the world rank of group rank r.
  virtual std::string name() const = 0;
  virtual int world_rank_of(int r) const = 0;

  template <typename T>
  void all_reduce_sum(T* buf, size_t n) { all_reduce(buf, n, dtype_of<T>(), ReduceOp::Sum); }
  template <typename T>
  void all_reduce_max(T* buf, size_t n) { all_reduce(buf, n, dtype_of<T>(), ReduceOp::Max); }

  // Time spent in all-reduces and the bytes they moved, for the logs and
  // the benchmarks.
  double all_reduce_seconds = 0.0;
  uint64_t all_reduce_bytes = 0;
  uint64_t all_reduce_calls = 0;
  // Likewise of the blocking all-gathers and reduce-scatters; bytes: the
  // whole gathered or scattered buffer, size() * count elements.
  double gather_scatter_seconds = 0.0;
  uint64_t gather_scatter_bytes = 0;
  template <typename T>
  void broadcast(T* buf, size_t n, int root) { broadcast(buf, n, dtype_of<T>(), root); }
  // Root's string, of any length, on every rank.
  void broadcast(std::string& s, int root) {
    int64_t size = int64_t(s.size());
    broadcast(&size, 1, root);
    s.resize(size_t(size));
    broadcast(s.data(), s.size(), DType::U8, root);
  }
};

// Wraps an MPI communicator it does not own (Topology owns the groups).
class MpiCommunicator final : public Communicator {
 public:
  explicit MpiCommunicator(MPI_Comm comm) : comm_(comm) {}
  int rank() const override;
  int size() const override;
  void all_reduce(void* buf, size_t n, DType type, ReduceOp op) override;
  void broadcast(void* buf, size_t n, DType type, int root) override;
  void barrier() override;
  Request isend(const void* buf, size_t n, DType type, int peer, int tag) override;
  Request irecv(void* buf, size_t n, DType type, int peer, int tag) override;
  void wait(Request& request) override;
  Request ireduce_scatter(const void* send, void* recv, size_t count, DType type) override;
  Request iall_gather(void* buf, size_t count, DType type) override;
  void all_gather(void* buf, size_t count, DType type) override;
  void reduce_scatter(const void* send, void* recv, size_t count, DType type) override;
  void all_to_all_rows(const void* send, const int* send_rows, void* recv, const int* recv_rows, size_t row_elems,
                       DType type) override;
  bool test(Request& request) override;
  std::string name() const override { return name_; }
  int world_rank_of(int r) const override;
  // kind: "TP group" and the like; the name adds the group's world ranks.
  void set_name(const std::string& kind);
  MPI_Comm comm() const { return comm_; }

 private:
  MPI_Comm comm_;
  std::string name_ = "the world";
  std::vector<int> world_ranks_;  // of each group rank, once named
};

}  // namespace mt
