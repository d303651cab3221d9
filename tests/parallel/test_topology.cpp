// Topology: Megatron's rank order (TP fastest, then DP, then PP), a one-rank
// world, and the size checks.
#include "parallel/topology.h"

#include <gtest/gtest.h>
#include <mpi.h>

#include <string>
#include <vector>

#include "runtime/check.h"

namespace mt {
namespace {

struct Row {
  int rank, tp, dp, pp;
};

TEST(Topology, MegatronOrderTable) {
  // TP=2, DP=2, PP=2: rank = tp + TP * (dp + DP * pp).
  const int TP = 2, DP = 2;
  const std::vector<Row> table = {
      {0, 0, 0, 0}, {1, 1, 0, 0}, {2, 0, 1, 0}, {3, 1, 1, 0},
      {4, 0, 0, 1}, {5, 1, 0, 1}, {6, 0, 1, 1}, {7, 1, 1, 1},
  };
  for (const Row& r : table) {
    Coords c = coords_of(r.rank, TP, DP);
    EXPECT_EQ(c.tp, r.tp) << "rank " << r.rank;
    EXPECT_EQ(c.dp, r.dp) << "rank " << r.rank;
    EXPECT_EQ(c.pp, r.pp) << "rank " << r.rank;
    EXPECT_EQ(rank_of(Coords{r.tp, r.dp, r.pp}, TP, DP), r.rank);
  }
}

// Context parallelism sits between TP and DP (Megatron's order):
// rank = tp + TP (cp + CP (dp + DP pp)); TP=2, CP=2, DP=3, PP=2.
TEST(Topology, ContextParallelRanksSitBetweenTensorAndData) {
  for (int rank = 0; rank < 24; ++rank) {
    const Coords c = coords_of(rank, 2, 3, 2);
    EXPECT_EQ(c.tp, rank % 2) << rank;
    EXPECT_EQ(c.cp, rank / 2 % 2) << rank;
    EXPECT_EQ(c.dp, rank / 4 % 3) << rank;
    EXPECT_EQ(c.pp, rank / 12) << rank;
    EXPECT_EQ(rank_of(c, 2, 3, 2), rank);
  }
}

TEST(Topology, UnevenSizesTableAndRoundTrip) {
  // TP=2, DP=3, PP=2: sizes that differ catch a DP/PP mix-up.
  const std::vector<Row> table = {
      {0, 0, 0, 0}, {1, 1, 0, 0}, {2, 0, 1, 0}, {3, 1, 1, 0}, {4, 0, 2, 0},  {5, 1, 2, 0},
      {6, 0, 0, 1}, {7, 1, 0, 1}, {8, 0, 1, 1}, {9, 1, 1, 1}, {10, 0, 2, 1}, {11, 1, 2, 1},
  };
  for (const Row& r : table) {
    Coords c = coords_of(r.rank, 2, 3);
    EXPECT_EQ(c.tp, r.tp) << "rank " << r.rank;
    EXPECT_EQ(c.dp, r.dp) << "rank " << r.rank;
    EXPECT_EQ(c.pp, r.pp) << "rank " << r.rank;
  }
  for (int TP : {1, 3, 4})
    for (int DP : {1, 2, 5})
      for (int PP : {1, 3}) {
        const int world = TP * DP * PP;
        for (int rank = 0; rank < world; ++rank) {
          Coords c = coords_of(rank, TP, DP);
          ASSERT_GE(c.tp, 0);
          ASSERT_LT(c.tp, TP);
          ASSERT_GE(c.dp, 0);
          ASSERT_LT(c.dp, DP);
          ASSERT_GE(c.pp, 0);
          ASSERT_LT(c.pp, PP);
          EXPECT_EQ(rank, c.tp + TP * (c.dp + DP * c.pp));
          EXPECT_EQ(rank_of(c, TP, DP), rank) << "TP=" << TP << " DP=" << DP << " PP=" << PP;
        }
      }
}

TEST(Topology, OneByOneOnWorld) {
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  Topology topo(MPI_COMM_WORLD, TopologyConfig{1, 1});
  EXPECT_EQ(topo.world_rank(), rank);
  EXPECT_EQ(topo.world_size(), size);
  EXPECT_EQ(topo.tp().size, 1);
  EXPECT_EQ(topo.pp().size, 1);
  EXPECT_EQ(topo.dp().size, size);
  EXPECT_EQ(topo.coords().tp, 0);
  EXPECT_EQ(topo.coords().pp, 0);
  EXPECT_EQ(topo.coords().dp, rank);
  EXPECT_EQ(topo.world().size(), size);
  EXPECT_EQ(topo.tp().comm->size(), 1);
  EXPECT_EQ(topo.pp().comm->size(), 1);
  EXPECT_EQ(topo.dp().comm->size(), size);
  EXPECT_EQ(topo.dp().comm->rank(), rank);
  EXPECT_EQ(topo.tp().comm->rank(), 0);
  EXPECT_NE(topo.table().find("TP=1"), std::string::npos) << topo.table();
}

// 8 ranks on two hosts: node[r] given, hosts "a" and "b".
NodeMap two_nodes(const std::vector<int>& node) {
  NodeMap m{node, {}};
  for (int n : node) m.host.push_back(n == 0 ? "a" : "b");
  return m;
}

TEST(Topology, NodeLayoutWarningsNameSpanningTpGroupsAndScatteredRanks) {
  const NodeMap blocks = two_nodes({0, 0, 0, 0, 1, 1, 1, 1});
  for (int tp : {1, 2, 4}) EXPECT_TRUE(node_layout_warnings(blocks, tp, 8 / tp).empty()) << "TP " << tp;
  const std::vector<std::string> wide = node_layout_warnings(blocks, 8, 1);
  ASSERT_EQ(wide.size(), 1u);
  EXPECT_NE(wide[0].find("the TP group of pp 0 dp 0 (world ranks 0 to 7) spans 2 nodes (a, b)"), std::string::npos)
      << wide[0];
  // Uneven nodes (3 + 5 ranks): TP 4's group 0-3 crosses, and TP 2's group 2-3.
  const NodeMap uneven = two_nodes({0, 0, 0, 1, 1, 1, 1, 1});
  EXPECT_EQ(node_layout_warnings(uneven, 4, 2).size(), 1u);
  EXPECT_EQ(node_layout_warnings(uneven, 2, 4).size(), 1u);

  // Round robin (mpirun --map-by node): every node scattered, every TP
  // group split.
  const std::vector<std::string> scattered = node_layout_warnings(two_nodes({0, 1, 0, 1, 0, 1, 0, 1}), 2, 4);
  ASSERT_EQ(scattered.size(), 2u + 4u);
  EXPECT_NE(scattered[0].find("the ranks of node 0 (a) are not consecutive: world ranks 0, 2, 4, 6"),
            std::string::npos)
      << scattered[0];
  EXPECT_NE(scattered[1].find("node 1 (b)"), std::string::npos) << scattered[1];
  EXPECT_NE(scattered[5].find("the TP group of pp 0 dp 3 (world ranks 6 to 7) spans 2 nodes (a, b)"),
            std::string::npos)
      << scattered[5];
}

TEST(Topology, EveryRankOfThisMachineIsOnOneNode) {
  char host[MPI_MAX_PROCESSOR_NAME] = {0};
  int length = 0;
  MPI_Get_processor_name(host, &length);
  Topology topo(MPI_COMM_WORLD, TopologyConfig{1, 1});
  EXPECT_EQ(topo.num_nodes(), 1);
  EXPECT_TRUE(topo.node_warnings().empty());
  for (const std::string& h : topo.nodes().host) EXPECT_EQ(h, host);
  EXPECT_NE(topo.table().find("on 1 node)"), std::string::npos) << topo.table();
  EXPECT_NE(topo.table().find(std::string("  ") + host + "\n"), std::string::npos) << topo.table();
}

TEST(Topology, WorldNotDivisibleByTpTimesPpThrows) {
  int size = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  if (size % 3 == 0) GTEST_SKIP() << "needs a world size not divisible by 3";
  try {
    Topology topo(MPI_COMM_WORLD, TopologyConfig{3, 1});
    FAIL() << "expected mt::Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("tensor-model-parallel-size"), std::string::npos)
        << e.what();
  }
}

TEST(Topology, NonPositiveSizesThrowNamingTheFlag) {
  try {
    Topology topo(MPI_COMM_WORLD, TopologyConfig{0, 1});
    FAIL() << "expected mt::Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--tensor-model-parallel-size"), std::string::npos)
        << e.what();
  }
  try {
    Topology topo(MPI_COMM_WORLD, TopologyConfig{1, 0});
    FAIL() << "expected mt::Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--pipeline-model-parallel-size"), std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace mt
