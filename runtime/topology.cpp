#include "runtime/topology.h"

#include <fmt/format.h>

#include "runtime/check.h"

namespace mt {

Coords coords_of(int rank, int tp_size, int dp_size) {
  return {rank % tp_size, (rank / tp_size) % dp_size, rank / (tp_size * dp_size)};
}

int rank_of(Coords c, int tp_size, int dp_size) { return c.tp + tp_size * (c.dp + dp_size * c.pp); }

Topology::Topology(MPI_Comm world, const TopologyConfig& cfg)
    : tp_size_(cfg.tensor_parallel), pp_size_(cfg.pipeline_parallel), world_comm_(world) {
  MPI_CHECK(MPI_Comm_rank(world, &world_rank_));
  MPI_CHECK(MPI_Comm_size(world, &world_size_));
  set_error_rank(world_rank_);
  MT_CHECK(tp_size_ >= 1, "--tensor-model-parallel-size must be >= 1, got {}", tp_size_);
  MT_CHECK(pp_size_ >= 1, "--pipeline-model-parallel-size must be >= 1, got {}", pp_size_);
  MT_CHECK(world_size_ % (tp_size_ * pp_size_) == 0,
           "world size {} is not divisible by tensor-model-parallel-size {} x "
           "pipeline-model-parallel-size {}",
           world_size_, tp_size_, pp_size_);
  dp_size_ = world_size_ / (tp_size_ * pp_size_);
  coords_ = coords_of(world_rank_, tp_size_, dp_size_);
  // Colour = the coordinates that stay fixed inside the group; key = rank.
  MPI_CHECK(MPI_Comm_split(world, coords_.dp + dp_size_ * coords_.pp, world_rank_, &tp_raw_));
  MPI_CHECK(MPI_Comm_split(world, coords_.tp + tp_size_ * coords_.pp, world_rank_, &dp_raw_));
  MPI_CHECK(MPI_Comm_split(world, coords_.tp + tp_size_ * coords_.dp, world_rank_, &pp_raw_));
  tp_comm_ = MpiCommunicator(tp_raw_);
  dp_comm_ = MpiCommunicator(dp_raw_);
  pp_comm_ = MpiCommunicator(pp_raw_);
}

Topology::~Topology() {
  for (MPI_Comm* c : {&tp_raw_, &pp_raw_, &dp_raw_})
    if (*c != MPI_COMM_NULL) MPI_Comm_free(c);
}

std::string Topology::table() const {
  std::string out = fmt::format("layout TP={} x PP={} x DP={} ({} ranks)\n  rank   tp   pp   dp\n",
                                tp_size_, pp_size_, dp_size_, world_size_);
  for (int r = 0; r < world_size_; ++r) {
    Coords c = coords_of(r, tp_size_, dp_size_);
    out += fmt::format("  {:4d} {:4d} {:4d} {:4d}\n", r, c.tp, c.pp, c.dp);
  }
  return out;
}

}  // namespace mt
