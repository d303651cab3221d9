// The communicator interface: the collectives the parallel layers use, over
// one process group. MpiCommunicator fills it with MPI; a NCCL communicator
// fills it for device memory on the CUDA backend.
#pragma once

#include <mpi.h>

#include <cstddef>
#include <cstdint>
#include <memory>

namespace mt {

enum class DType { F32, F64, I32, I64 };
enum class ReduceOp { Sum, Max };

template <typename T>
constexpr DType dtype_of();
template <>
constexpr DType dtype_of<float>() { return DType::F32; }
template <>
constexpr DType dtype_of<double>() { return DType::F64; }
template <>
constexpr DType dtype_of<int32_t>() { return DType::I32; }
template <>
constexpr DType dtype_of<int64_t>() { return DType::I64; }

// A non-blocking point-to-point transfer in flight; wait() completes it.
struct P2PRequest {
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
  virtual P2PRequest isend(const void* buf, size_t n, DType type, int peer, int tag) = 0;
  virtual P2PRequest irecv(void* buf, size_t n, DType type, int peer, int tag) = 0;
  virtual void wait(P2PRequest& request) = 0;

  template <typename T>
  void all_reduce_sum(T* buf, size_t n) { all_reduce(buf, n, dtype_of<T>(), ReduceOp::Sum); }
  template <typename T>
  void all_reduce_max(T* buf, size_t n) { all_reduce(buf, n, dtype_of<T>(), ReduceOp::Max); }

  // Time spent in all-reduces and the bytes they moved, for the logs and
  // the benchmarks.
  double all_reduce_seconds = 0.0;
  uint64_t all_reduce_bytes = 0;
  uint64_t all_reduce_calls = 0;
  template <typename T>
  void broadcast(T* buf, size_t n, int root) { broadcast(buf, n, dtype_of<T>(), root); }
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
  P2PRequest isend(const void* buf, size_t n, DType type, int peer, int tag) override;
  P2PRequest irecv(void* buf, size_t n, DType type, int peer, int tag) override;
  void wait(P2PRequest& request) override;
  MPI_Comm comm() const { return comm_; }

 private:
  MPI_Comm comm_;
};

}  // namespace mt
