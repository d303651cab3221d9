// The process topology: world = TP x PP x DP in Megatron's rank order
// (TP fastest, then DP, then PP): rank = tp + TP * (dp + DP * pp).
#pragma once

#include <mpi.h>

#include <string>

#include "runtime/communicator.h"

namespace mt {

struct TopologyConfig {
  int tensor_parallel = 1;
  int pipeline_parallel = 1;
};

struct Coords {
  int tp = 0, dp = 0, pp = 0;
};

// Pure rank arithmetic, usable without MPI.
Coords coords_of(int rank, int tp_size, int dp_size);
int rank_of(Coords c, int tp_size, int dp_size);

class Topology {
 public:
  // Collective over `world`: checks the sizes and splits the groups.
  Topology(MPI_Comm world, const TopologyConfig& cfg);
  ~Topology();
  Topology(const Topology&) = delete;
  Topology& operator=(const Topology&) = delete;

  int world_rank() const { return world_rank_; }
  int world_size() const { return world_size_; }
  int tp_size() const { return tp_size_; }
  int pp_size() const { return pp_size_; }
  int dp_size() const { return dp_size_; }
  Coords coords() const { return coords_; }

  Communicator& world() { return world_comm_; }
  // The world as an MPI communicator, for MPI-IO (parallel HDF5), which
  // takes the communicator itself.
  MPI_Comm world_mpi() const { return world_comm_.comm(); }
  Communicator& tp() { return tp_comm_; }
  Communicator& pp() { return pp_comm_; }
  Communicator& dp() { return dp_comm_; }

  // One line a rank: "rank  tp  pp  dp", for the start-up log.
  std::string table() const;

 private:
  int world_rank_ = 0, world_size_ = 1;
  int tp_size_ = 1, pp_size_ = 1, dp_size_ = 1;
  Coords coords_;
  MPI_Comm tp_raw_ = MPI_COMM_NULL, pp_raw_ = MPI_COMM_NULL, dp_raw_ = MPI_COMM_NULL;
  MpiCommunicator world_comm_{MPI_COMM_NULL}, tp_comm_{MPI_COMM_NULL}, pp_comm_{MPI_COMM_NULL},
      dp_comm_{MPI_COMM_NULL};
};

}  // namespace mt
