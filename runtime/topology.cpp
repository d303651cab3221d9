#include "runtime/topology.h"

#include <fmt/format.h>

#include "runtime/check.h"

namespace mt {

Coords coords_of(int rank, int tp_size, int dp_size) {
  return {rank % tp_size, (rank / tp_size) % dp_size, rank / (tp_size * dp_size)};
}

int rank_of(Coords c, int tp_size, int dp_size) { return c.tp + tp_size * (c.dp + dp_size * c.pp); }

Topology::Topology(MPI_Comm world, const TopologyConfig& cfg)
    : tp_size_(cfg.tensor_parallel), pp_size_(cfg.pipeline_parallel), ep_size_(cfg.expert_parallel),
      world_comm_(world) {
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
  MT_CHECK(ep_size_ >= 1, "--expert-model-parallel-size must be >= 1, got {}", ep_size_);
  MT_CHECK(dp_size_ % ep_size_ == 0,
           "--expert-model-parallel-size {} must divide the data-parallel size {} (world {} / (TP {} x PP {}))",
           ep_size_, dp_size_, world_size_, tp_size_, pp_size_);
  coords_ = coords_of(world_rank_, tp_size_, dp_size_);
  // Colour = the coordinates that stay fixed inside the group; key = rank.
  MPI_CHECK(MPI_Comm_split(world, coords_.dp + dp_size_ * coords_.pp, world_rank_, &tp_raw_));
  MPI_CHECK(MPI_Comm_split(world, coords_.tp + tp_size_ * coords_.pp, world_rank_, &dp_raw_));
  MPI_CHECK(MPI_Comm_split(world, coords_.tp + tp_size_ * coords_.dp, world_rank_, &pp_raw_));
  const ExpertCoords ec = expert();
  MPI_CHECK(MPI_Comm_split(dp_raw_, ec.edp, coords_.dp, &ep_raw_));
  MPI_CHECK(MPI_Comm_split(dp_raw_, ec.ep, coords_.dp, &edp_raw_));
  tp_comm_ = MpiCommunicator(tp_raw_);
  dp_comm_ = MpiCommunicator(dp_raw_);
  pp_comm_ = MpiCommunicator(pp_raw_);
  ep_comm_ = MpiCommunicator(ep_raw_);
  edp_comm_ = MpiCommunicator(edp_raw_);
  world_comm_.set_name("the world");
  tp_comm_.set_name("TP group");
  dp_comm_.set_name("DP group");
  pp_comm_.set_name("PP group");
  ep_comm_.set_name("EP group");
  edp_comm_.set_name("expert-DP group");
}

Topology::~Topology() {
  for (MPI_Comm* c : {&ep_raw_, &edp_raw_, &tp_raw_, &pp_raw_, &dp_raw_})
    if (*c != MPI_COMM_NULL) MPI_Comm_free(c);
}

std::string Topology::table() const {
  std::string out = fmt::format("layout TP={} x PP={} x DP={} ({} ranks)", tp_size_, pp_size_, dp_size_, world_size_);
  if (ep_size_ > 1) out += fmt::format(", experts EP={} x expert-DP={}", ep_size_, edp_size());
  out += ep_size_ > 1 ? "\n  rank   tp   pp   dp   ep  edp\n" : "\n  rank   tp   pp   dp\n";
  for (int r = 0; r < world_size_; ++r) {
    const Coords c = coords_of(r, tp_size_, dp_size_);
    out += fmt::format("  {:4d} {:4d} {:4d} {:4d}", r, c.tp, c.pp, c.dp);
    if (ep_size_ > 1) {
      const ExpertCoords e = expert_coords(c.dp, ep_size_);
      out += fmt::format(" {:4d} {:4d}", e.ep, e.edp);
    }
    out += "\n";
  }
  return out;
}

}  // namespace mt
