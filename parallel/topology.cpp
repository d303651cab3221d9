#include "parallel/topology.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <map>

#include "runtime/check.h"

namespace mt {

Coords coords_of(int rank, int tp_size, int dp_size, int cp_size) {
  return {rank % tp_size, (rank / (tp_size * cp_size)) % dp_size, rank / (tp_size * cp_size * dp_size),
          (rank / tp_size) % cp_size};
}

int rank_of(Coords c, int tp_size, int dp_size, int cp_size) {
  return c.tp + tp_size * (c.cp + cp_size * (c.dp + dp_size * c.pp));
}

namespace {

// Collective over world: the node of every rank, from MPI's shared-memory
// split (ranks that can share memory run on one node), and the host names.
NodeMap map_nodes(MPI_Comm world, int rank, int size) {
  MPI_Comm local = MPI_COMM_NULL;
  MPI_CHECK(MPI_Comm_split_type(world, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &local));
  int leader = rank;  // the lowest world rank of the node names it
  MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &leader, 1, MPI_INT, MPI_MIN, local));
  MPI_CHECK(MPI_Comm_free(&local));
  std::vector<int> leaders(size_t(size), 0);
  MPI_CHECK(MPI_Allgather(&leader, 1, MPI_INT, leaders.data(), 1, MPI_INT, world));
  char name[MPI_MAX_PROCESSOR_NAME] = {0};
  int length = 0;
  MPI_CHECK(MPI_Get_processor_name(name, &length));
  std::vector<char> names(size_t(size) * MPI_MAX_PROCESSOR_NAME, 0);
  MPI_CHECK(MPI_Allgather(name, MPI_MAX_PROCESSOR_NAME, MPI_CHAR, names.data(), MPI_MAX_PROCESSOR_NAME, MPI_CHAR,
                          world));
  NodeMap m;
  std::map<int, int> number;  // leader -> node number
  for (int r = 0; r < size; ++r) {
    m.node.push_back(number.try_emplace(leaders[size_t(r)], int(number.size())).first->second);
    m.host.emplace_back(names.data() + size_t(r) * MPI_MAX_PROCESSOR_NAME);
  }
  return m;
}

}  // namespace

std::vector<std::string> node_layout_warnings(const NodeMap& nodes, int tp_size, int dp_size) {
  std::vector<std::string> out;
  const int world = int(nodes.node.size());
  std::map<int, std::vector<int>> ranks_of;  // node -> its world ranks
  for (int r = 0; r < world; ++r) ranks_of[nodes.node[size_t(r)]].push_back(r);
  for (const auto& [node, ranks] : ranks_of)
    if (ranks.back() - ranks.front() + 1 != int(ranks.size()))
      out.push_back(fmt::format("the ranks of node {} ({}) are not consecutive: world ranks {}; TP groups are "
                                "neighbouring ranks, so launch a node's ranks together (mpirun --map-by "
                                "ppr:N:node, srun --distribution=block)",
                                node, nodes.host[size_t(ranks.front())], fmt::join(ranks, ", ")));
  for (int first = 0; first < world; first += tp_size) {
    std::vector<int> spanned;
    for (int r = first; r < first + tp_size && r < world; ++r)
      if (std::find(spanned.begin(), spanned.end(), nodes.node[size_t(r)]) == spanned.end())
        spanned.push_back(nodes.node[size_t(r)]);
    if (spanned.size() < 2) continue;
    std::vector<std::string> hosts;
    for (int n : spanned) hosts.push_back(nodes.host[size_t(ranks_of[n].front())]);
    const Coords c = coords_of(first, tp_size, dp_size);
    out.push_back(fmt::format("the TP group of pp {} dp {} (world ranks {} to {}) spans {} nodes ({}): its "
                              "all-reduces, several a layer, cross the network; choose a TP size that divides "
                              "the ranks of a node",
                              c.pp, c.dp, first, std::min(first + tp_size, world) - 1, spanned.size(),
                              fmt::join(hosts, ", ")));
  }
  return out;
}

Topology::Topology(MPI_Comm world, const TopologyConfig& cfg) : world_comm_(world) {
  MPI_CHECK(MPI_Comm_rank(world, &world_rank_));
  MPI_CHECK(MPI_Comm_size(world, &world_size_));
  set_error_rank(world_rank_);
  const int tp = cfg.tensor_parallel, pp = cfg.pipeline_parallel, ep = cfg.expert_parallel,
            cp = cfg.context_parallel;
  MT_CHECK(tp >= 1, "--tensor-model-parallel-size must be >= 1, got {}", tp);
  MT_CHECK(pp >= 1, "--pipeline-model-parallel-size must be >= 1, got {}", pp);
  MT_CHECK(cp >= 1, "--context-parallel-size must be >= 1, got {}", cp);
  MT_CHECK(world_size_ % (tp * pp) == 0,
           "world size {} is not divisible by tensor-model-parallel-size {} x "
           "pipeline-model-parallel-size {}",
           world_size_, tp, pp);
  MT_CHECK(world_size_ % (tp * cp * pp) == 0,
           "world size {} is not divisible by --tensor-model-parallel-size {} x --context-parallel-size {} x "
           "--pipeline-model-parallel-size {}",
           world_size_, tp, cp, pp);
  const int dp = world_size_ / (tp * cp * pp);
  MT_CHECK(ep >= 1, "--expert-model-parallel-size must be >= 1, got {}", ep);
  MT_CHECK(dp % ep == 0,
           "--expert-model-parallel-size {} must divide the data-parallel size {} (world {} / (TP {} x PP {}))", ep,
           dp, world_size_, tp, pp);
  coords_ = coords_of(world_rank_, tp, dp, cp);
  nodes_ = map_nodes(world, world_rank_, world_size_);
  // Colour = the coordinates that stay fixed inside the group; key = rank.
  const Coords& c = coords_;
  MPI_CHECK(MPI_Comm_split(world, c.cp + cp * (c.dp + dp * c.pp), world_rank_, &tp_raw_));
  MPI_CHECK(MPI_Comm_split(world, c.tp + tp * (c.cp + cp * c.pp), world_rank_, &dp_raw_));
  MPI_CHECK(MPI_Comm_split(world, c.tp + tp * (c.cp + cp * c.dp), world_rank_, &pp_raw_));
  const ExpertCoords ec = expert_coords(c.dp, ep);
  MPI_CHECK(MPI_Comm_split(dp_raw_, ec.edp, c.dp, &ep_raw_));
  MPI_CHECK(MPI_Comm_split(dp_raw_, ec.ep, c.dp, &edp_raw_));
  world_comm_.set_name("the world");
  // A split communicator wrapped and named, and this rank's place in it.
  auto group = [](MpiCommunicator& comm, MPI_Comm raw, const char* name, int rank, int size) {
    comm = MpiCommunicator(raw);
    comm.set_name(name);
    return ProcessGroup{&comm, rank, size};
  };
  tp_ = group(tp_comm_, tp_raw_, "TP group", c.tp, tp);
  pp_ = group(pp_comm_, pp_raw_, "PP group", c.pp, pp);
  dp_ = group(dp_comm_, dp_raw_, "DP group", c.dp, dp);
  ep_ = group(ep_comm_, ep_raw_, "EP group", ec.ep, ep);
  edp_ = group(edp_comm_, edp_raw_, "expert-DP group", ec.edp, dp / ep);
  if (cp == 1) return;
  MPI_CHECK(MPI_Comm_split(world, c.tp + tp * (c.dp + dp * c.pp), world_rank_, &cp_raw_));
  MPI_CHECK(MPI_Comm_split(world, c.tp + tp * c.pp, world_rank_, &dp_cp_raw_));
  MPI_CHECK(MPI_Comm_split(dp_cp_raw_, ec.ep, c.cp + cp * ec.edp, &edp_cp_raw_));
  cp_ = group(cp_comm_, cp_raw_, "CP group", c.cp, cp);
  dp_cp_ = group(dp_cp_comm_, dp_cp_raw_, "DP x CP group", c.cp + cp * c.dp, cp * dp);
  edp_cp_ = group(edp_cp_comm_, edp_cp_raw_, "expert-DP x CP group", c.cp + cp * ec.edp, cp * (dp / ep));
}

Topology::~Topology() {
  for (MPI_Comm* c : {&ep_raw_, &edp_raw_, &edp_cp_raw_, &cp_raw_, &dp_cp_raw_, &tp_raw_, &pp_raw_, &dp_raw_})
    if (*c != MPI_COMM_NULL) MPI_Comm_free(c);
}

int Topology::num_nodes() const { return 1 + *std::max_element(nodes_.node.begin(), nodes_.node.end()); }

std::string Topology::table() const {
  std::string out = fmt::format("layout TP={} x PP={} x DP={}{} ({} ranks on {} node{})", tp_.size, pp_.size,
                                dp_.size, cp_.size > 1 ? fmt::format(" x CP={}", cp_.size) : "", world_size_,
                                num_nodes(), num_nodes() == 1 ? "" : "s");
  if (ep_.size > 1) out += fmt::format(", experts EP={} x expert-DP={}", ep_.size, edp_.size);
  out += fmt::format("\n  rank   tp   pp   dp{}{}  host\n", cp_.size > 1 ? "   cp" : "", ep_.size > 1 ? "   ep  edp" : "");
  for (int r = 0; r < world_size_; ++r) {
    const Coords c = coords_of(r, tp_.size, dp_.size, cp_.size);
    out += fmt::format("  {:4d} {:4d} {:4d} {:4d}", r, c.tp, c.pp, c.dp);
    if (cp_.size > 1) out += fmt::format(" {:4d}", c.cp);
    if (ep_.size > 1) {
      const ExpertCoords e = expert_coords(c.dp, ep_.size);
      out += fmt::format(" {:4d} {:4d}", e.ep, e.edp);
    }
    out += fmt::format("  {}\n", nodes_.host[size_t(r)]);
  }
  return out;
}

}  // namespace mt
