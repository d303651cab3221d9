#include "runtime/communicator.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <climits>
#include <vector>

#include "runtime/check.h"
#include "runtime/watchdog.h"

namespace mt {

namespace {

MPI_Datatype mpi_type(DType t) {
  switch (t) {
    case DType::F32: return MPI_FLOAT;
    case DType::F64: return MPI_DOUBLE;
    case DType::BF16: return MPI_UINT16_T;  // moved as bits; reduced by bf16_op
    case DType::I32: return MPI_INT32_T;
    case DType::I64: return MPI_INT64_T;
    case DType::U8: return MPI_UINT8_T;
  }
  MT_FAIL("unknown dtype {}", int(t));
}

size_t dtype_size(DType t) {
  switch (t) {
    case DType::U8: return 1;
    case DType::BF16: return 2;
    case DType::F32:
    case DType::I32: return 4;
    default: return 8;
  }
}

// MPI has no bf16: sums and maxima of pairs in float32, each rounded to
// bf16 once, as NCCL reduces bf16.
void bf16_sum(void* in, void* inout, int* len, MPI_Datatype*) {
  const bf16* a = static_cast<const bf16*>(in);
  bf16* b = static_cast<bf16*>(inout);
  for (int i = 0; i < *len; ++i) b[i] = bf16(float(a[i]) + float(b[i]));
}
void bf16_max(void* in, void* inout, int* len, MPI_Datatype*) {
  const bf16* a = static_cast<const bf16*>(in);
  bf16* b = static_cast<bf16*>(inout);
  for (int i = 0; i < *len; ++i)
    if (float(a[i]) > float(b[i])) b[i] = a[i];
}

MPI_Op mpi_op(DType type, ReduceOp op) {
  if (type != DType::BF16) return op == ReduceOp::Sum ? MPI_SUM : MPI_MAX;
  static MPI_Op sum = MPI_OP_NULL, max = MPI_OP_NULL;  // created once, after MPI_Init
  if (sum == MPI_OP_NULL) {
    MPI_CHECK(MPI_Op_create(bf16_sum, 1, &sum));
    MPI_CHECK(MPI_Op_create(bf16_max, 1, &max));
  }
  return op == ReduceOp::Sum ? sum : max;
}

int mpi_count(size_t n) {
  MT_CHECK(n <= size_t(INT_MAX), "collective of {} elements exceeds MPI's int count", n);
  return int(n);
}

}  // namespace

int MpiCommunicator::rank() const {
  int r = 0;
  MPI_CHECK(MPI_Comm_rank(comm_, &r));
  return r;
}

int MpiCommunicator::size() const {
  int s = 1;
  MPI_CHECK(MPI_Comm_size(comm_, &s));
  return s;
}

void MpiCommunicator::set_name(const std::string& kind) {
  MPI_Group group = MPI_GROUP_NULL, world = MPI_GROUP_NULL;
  MPI_CHECK(MPI_Comm_group(comm_, &group));
  MPI_CHECK(MPI_Comm_group(MPI_COMM_WORLD, &world));
  const int n = size();
  std::vector<int> mine(n);
  for (int r = 0; r < n; ++r) mine[r] = r;
  world_ranks_.assign(n, 0);
  MPI_CHECK(MPI_Group_translate_ranks(group, n, mine.data(), world, world_ranks_.data()));
  MPI_Group_free(&group);
  MPI_Group_free(&world);
  name_ = fmt::format("{} (world ranks {})", kind, fmt::join(world_ranks_, ", "));
}

int MpiCommunicator::world_rank_of(int r) const {
  return world_ranks_.empty() ? r : world_ranks_.at(size_t(r));
}

void MpiCommunicator::all_reduce(void* buf, size_t n, DType type, ReduceOp op) {
  const WaitingFor waiting(fmt::format("an all-reduce of {} elements in {}", n, name_));
  const double start = MPI_Wtime();
  MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, buf, mpi_count(n), mpi_type(type), mpi_op(type, op), comm_));
  all_reduce_seconds += MPI_Wtime() - start;
  all_reduce_bytes += n * dtype_size(type);
  all_reduce_calls += 1;
}

void MpiCommunicator::broadcast(void* buf, size_t n, DType type, int root) {
  const WaitingFor waiting(fmt::format("a broadcast from group rank {} in {}", root, name_));
  MPI_CHECK(MPI_Bcast(buf, mpi_count(n), mpi_type(type), root, comm_));
}

void MpiCommunicator::barrier() {
  const WaitingFor waiting(fmt::format("a barrier in {}", name_));
  MPI_CHECK(MPI_Barrier(comm_));
}

Request MpiCommunicator::isend(const void* buf, size_t n, DType type, int peer, int tag) {
  Request r;
  MPI_CHECK(MPI_Isend(buf, mpi_count(n), mpi_type(type), peer, tag, comm_, &r.mpi));
  return r;
}

Request MpiCommunicator::irecv(void* buf, size_t n, DType type, int peer, int tag) {
  Request r;
  MPI_CHECK(MPI_Irecv(buf, mpi_count(n), mpi_type(type), peer, tag, comm_, &r.mpi));
  return r;
}

void MpiCommunicator::wait(Request& request) {
  if (!request.pending()) return;
  MPI_CHECK(MPI_Wait(&request.mpi, MPI_STATUS_IGNORE));
}

Request MpiCommunicator::ireduce_scatter(const void* send, void* recv, size_t count, DType type) {
  Request r;
  MPI_CHECK(MPI_Ireduce_scatter_block(send, recv, mpi_count(count), mpi_type(type), mpi_op(type, ReduceOp::Sum),
                                      comm_, &r.mpi));
  return r;
}

Request MpiCommunicator::iall_gather(void* buf, size_t count, DType type) {
  Request r;
  MPI_CHECK(MPI_Iallgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, buf, mpi_count(count), mpi_type(type),
                           comm_, &r.mpi));
  return r;
}

void MpiCommunicator::all_gather(void* buf, size_t count, DType type) {
  const WaitingFor waiting(fmt::format("an all-gather in {}", name_));
  const double start = MPI_Wtime();
  MPI_CHECK(MPI_Allgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, buf, mpi_count(count), mpi_type(type), comm_));
  gather_scatter_seconds += MPI_Wtime() - start;
  gather_scatter_bytes += count * size_t(size()) * dtype_size(type);
}

void MpiCommunicator::reduce_scatter(const void* send, void* recv, size_t count, DType type) {
  const WaitingFor waiting(fmt::format("a reduce-scatter in {}", name_));
  const double start = MPI_Wtime();
  MPI_CHECK(MPI_Reduce_scatter_block(send, recv, mpi_count(count), mpi_type(type), mpi_op(type, ReduceOp::Sum),
                                     comm_));
  gather_scatter_seconds += MPI_Wtime() - start;
  gather_scatter_bytes += count * size_t(size()) * dtype_size(type);
}

void MpiCommunicator::all_to_all_rows(const void* send, const int* send_rows, void* recv, const int* recv_rows,
                                      size_t row_elems, DType type) {
  // Counts in rows of a contiguous type, so that a count stays an int for
  // any row width.
  MPI_Datatype row = MPI_DATATYPE_NULL;
  MPI_CHECK(MPI_Type_contiguous(mpi_count(row_elems), mpi_type(type), &row));
  MPI_CHECK(MPI_Type_commit(&row));
  const int n = size();
  std::vector<int> send_at(n, 0), recv_at(n, 0);
  for (int q = 1; q < n; ++q) {
    send_at[q] = send_at[q - 1] + send_rows[q - 1];
    recv_at[q] = recv_at[q - 1] + recv_rows[q - 1];
  }
  const WaitingFor waiting(fmt::format("an all-to-all in {}", name_));
  MPI_CHECK(MPI_Alltoallv(send, send_rows, send_at.data(), row, recv, recv_rows, recv_at.data(), row, comm_));
  MPI_CHECK(MPI_Type_free(&row));
}

bool MpiCommunicator::test(Request& request) {
  if (!request.pending()) return true;
  int done = 0;
  MPI_CHECK(MPI_Test(&request.mpi, &done, MPI_STATUS_IGNORE));
  return done != 0;
}

}  // namespace mt
