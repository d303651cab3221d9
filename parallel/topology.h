// The process topology: world = TP x PP x DP in Megatron's rank order
// (TP fastest, then DP, then PP): rank = tp + TP * (dp + DP * pp). Expert
// parallelism splits each DP group further (docs/design.md, "Expert
// parallelism"): DP rank dp is EP rank dp % EP of expert-DP rank dp / EP.
#pragma once

#include <mpi.h>

#include <string>
#include <vector>

#include "parallel/process_group.h"
#include "runtime/communicator.h"

namespace mt {

struct TopologyConfig {
  int tensor_parallel = 1;
  int pipeline_parallel = 1;
  int expert_parallel = 1;
  int context_parallel = 1;  // --context-parallel-size: each sequence split over CP ranks
};

struct Coords {
  int tp = 0, dp = 0, pp = 0, cp = 0;
};

// Where DP rank dp sits in its EP group and its expert-DP group.
struct ExpertCoords {
  int ep = 0, edp = 0;
};
inline ExpertCoords expert_coords(int dp, int ep_size) { return {dp % ep_size, dp / ep_size}; }

// Pure rank arithmetic, usable without MPI: rank = tp + TP (cp + CP (dp +
// DP pp)), Megatron's order.
Coords coords_of(int rank, int tp_size, int dp_size, int cp_size = 1);
int rank_of(Coords c, int tp_size, int dp_size, int cp_size = 1);

// Where each world rank runs: node[r] numbers rank r's node (its
// shared-memory domain, in order of first appearance), host[r] its name.
struct NodeMap {
  std::vector<int> node;
  std::vector<std::string> host;
};

// What is wrong with a layout across nodes, one sentence each: a TP group
// that spans nodes (its all-reduces, several a layer, would cross the
// network) and a node whose ranks are not consecutive (so TP groups, which
// are neighbouring ranks, cannot sit inside nodes). Empty when all is well.
std::vector<std::string> node_layout_warnings(const NodeMap& nodes, int tp_size, int dp_size);

class Topology {
 public:
  // Collective over `world`: checks the sizes and splits the groups.
  Topology(MPI_Comm world, const TopologyConfig& cfg);
  ~Topology();
  Topology(const Topology&) = delete;
  Topology& operator=(const Topology&) = delete;

  int world_rank() const { return world_rank_; }
  int world_size() const { return world_size_; }
  Coords coords() const { return coords_; }

  Communicator& world() { return world_comm_; }
  // The world as an MPI communicator, for MPI-IO (parallel HDF5), which
  // takes the communicator itself.
  MPI_Comm world_mpi() const { return world_comm_.comm(); }
  const ProcessGroup& tp() const { return tp_; }
  const ProcessGroup& pp() const { return pp_; }
  const ProcessGroup& dp() const { return dp_; }
  // The ranks of this DP group that hold the other experts (EP), and those
  // that hold the same experts (expert-DP, where expert gradients are
  // summed and ZeRO-1 shards expert state).
  const ProcessGroup& ep() const { return ep_; }
  const ProcessGroup& edp() const { return edp_; }
  // Context parallelism: the ranks of this (tp, dp, pp) that split each
  // sequence; and the groups over which gradients are summed and ZeRO-1
  // shards state, DP x CP (expert-DP x CP for the experts): CP ranks hold
  // the same weights and see other tokens. Without CP, dp() and edp().
  const ProcessGroup& cp() const { return cp_; }
  const ProcessGroup& dp_cp() const { return cp_.size > 1 ? dp_cp_ : dp_; }
  const ProcessGroup& edp_cp() const { return cp_.size > 1 ? edp_cp_ : edp_; }

  // Collective, from the constructor: which ranks share a node.
  const NodeMap& nodes() const { return nodes_; }
  int num_nodes() const;
  std::vector<std::string> node_warnings() const { return node_layout_warnings(nodes_, tp_.size, dp_.size); }

  // One line a rank: "rank  tp  pp  dp  host", for the start-up log.
  std::string table() const;

 private:
  int world_rank_ = 0, world_size_ = 1;
  Coords coords_;
  NodeMap nodes_;
  MPI_Comm tp_raw_ = MPI_COMM_NULL, pp_raw_ = MPI_COMM_NULL, dp_raw_ = MPI_COMM_NULL, ep_raw_ = MPI_COMM_NULL,
           edp_raw_ = MPI_COMM_NULL, cp_raw_ = MPI_COMM_NULL, dp_cp_raw_ = MPI_COMM_NULL,
           edp_cp_raw_ = MPI_COMM_NULL;
  MpiCommunicator world_comm_{MPI_COMM_NULL}, tp_comm_{MPI_COMM_NULL}, pp_comm_{MPI_COMM_NULL},
      dp_comm_{MPI_COMM_NULL}, ep_comm_{MPI_COMM_NULL}, edp_comm_{MPI_COMM_NULL}, cp_comm_{MPI_COMM_NULL},
      dp_cp_comm_{MPI_COMM_NULL}, edp_cp_comm_{MPI_COMM_NULL};
  ProcessGroup tp_, pp_, dp_, ep_, edp_, cp_, dp_cp_, edp_cp_;
};

}  // namespace mt
