// Several hosts on one machine (docs/clusters.md): two network and UTS
// namespaces joined by a veth pair, each with its own host name and address,
// and mpirun launching across them over TCP with `ip netns exec` as its
// launch agent (Open MPI's plm_rsh_agent) in place of ssh. Two hosts x two
// ranks, TP2 inside each host and DP2 across them, and TP2 x PP2 with the
// stages on different hosts, each train what one rank trains; killing every
// process of one host ends the job within 10 s. Skipped, saying why, where
// the namespaces cannot be made (not root, a container without
// CAP_SYS_ADMIN, no `ip`).
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

#include "model/parameters.h"
#include "run_moetrain.h"
#include "same_training.h"

namespace mt {
namespace {

namespace fs = std::filesystem;
using test_util::run_moetrain;
using test_util::run_shell;

// One of the two hosts of a test.
struct Host {
  std::string netns, address, name;
};

class SeveralHosts : public ::testing::Test {
 protected:
  void SetUp() override {
    // The addresses are private to the pair's namespaces; the names are
    // the machine's, so they carry the pid.
    const std::string tag = std::to_string(getpid() % 100000);
    hosts_[0] = {"mt" + tag + "a", "10.77.0.1", "mthost" + tag + "a"};
    hosts_[1] = {"mt" + tag + "b", "10.77.0.2", "mthost" + tag + "b"};
    const std::string veth = "mtv" + tag;  // interface names have at most 15 characters
    std::string setup;
    for (const Host& h : hosts_) setup += "ip netns add " + h.netns + " && ";
    setup += "ip link add " + veth + "a type veth peer name " + veth + "b";
    for (int i = 0; i < 2; ++i) {
      const Host& h = hosts_[i];
      const std::string dev = veth + (i == 0 ? "a" : "b");
      setup += " && ip link set " + dev + " netns " + h.netns + " && ip -n " + h.netns + " addr add " + h.address +
               "/24 dev " + dev + " && ip -n " + h.netns + " link set lo up && ip -n " + h.netns + " link set " +
               dev + " up";
    }
    const auto made = run_shell(setup);
    made_ = made.status == 0;
    if (!made_) GTEST_SKIP() << "cannot make network namespaces here (needs root and `ip`):\n" << made.output;

    // The launch agent: `agent HOST COMMAND...` runs COMMAND on HOST, in its
    // namespaces under its name, as ssh would.
    std::ofstream agent(dir / "agent.sh");
    agent << "#!/bin/sh\nhost=$1; shift\ncase $host in\n";
    for (const Host& h : hosts_)
      agent << h.address << ") exec ip netns exec " << h.netns << " unshare --uts sh -c \"hostname " << h.name
            << "; $*\" ;;\n";
    agent << "esac\necho \"agent.sh: no host $host\" >&2; exit 1\n";
    agent.close();
    fs::permissions(dir / "agent.sh", fs::perms::owner_all);
    std::ofstream(dir / "hosts") << hosts_[0].address << " slots=2\n" << hosts_[1].address << " slots=2\n";
    store_ = test_util::make_store(dir, "store", test_util::synthetic_text(150000, 12));
  }
  void TearDown() override {
    if (made_) run_shell("ip netns del " + hosts_[0].netns + "; ip netns del " + hosts_[1].netns);
  }

  // `moetrain ARGS` on 4 ranks, 2 a host, started by mpirun on the first host.
  test_util::CommandResult run_across_hosts(const std::string& args) {
    const std::string subnet = "10.77.0.0/24";
    const std::string mpirun = std::string(MT_MPIEXEC) + " -np 4 --hostfile " + (dir / "hosts") + test_util::kMpirunFlags +
                               "--mca plm_rsh_agent " + (dir / "agent.sh") + " --mca oob_tcp_if_include " + subnet +
                               " --mca btl_tcp_if_include " + subnet + " --mca btl tcp,self,vader " + MT_MOETRAIN_BIN +
                               " " + args;
    return run_shell(test_util::kClearMpiEnvironment + "OMP_NUM_THREADS=1 ip netns exec " + hosts_[0].netns +
                     " unshare --uts sh -c 'hostname " + hosts_[0].name + "; exec " + mpirun + "'");
  }
  std::string train(const std::string& name, int iters) {
    return "train " + test_util::tiny_model_flags() + " --data-path " + store_ + " --train-iters " +
           std::to_string(iters) + " --lr-decay-samples 96 --log-interval 1 --metrics-file " +
           (dir / (name + ".jsonl")) + " --save " + (dir / name);
  }
  test_util::BinaryRun run(const std::string& name) {
    return {dir / (name + ".jsonl"), dir / (name + "/iter_0000008/checkpoint.h5")};
  }

  test_util::TempDir dir;
  Host hosts_[2];
  bool made_ = false;
  std::string store_;
};

TEST_F(SeveralHosts, TpInsideAHostDpOrPpAcrossTrainWhatOneRankTrains) {
  const auto one = run_moetrain(train("one", 8));
  ASSERT_EQ(one.status, 0) << one.output;
  const auto perturbed = run_moetrain(train("perturbed", 8) + test_util::perturbed_flags());
  ASSERT_EQ(perturbed.status, 0) << perturbed.output;
  std::vector<std::string> tensors;
  for (const ParamTensor& t : param_table(test_util::tiny_model_config()))
    for (const std::string group : {"model/", "optim/exp_avg/", "optim/exp_avg_sq/"}) tensors.push_back(group + t.name);

  for (const auto& [name, flags] : {std::pair<std::string, std::string>{"tp2dp2", "--tp 2"}, {"tp2pp2", "--tp 2 --pp 2"}}) {
    SCOPED_TRACE(name);
    const auto r = run_across_hosts(train(name, 8) + " " + flags);
    ASSERT_EQ(r.status, 0) << r.output;
    EXPECT_NE(r.output.find("(4 ranks on 2 nodes)"), std::string::npos) << r.output;
    // Ranks 0 and 1 on the first host, 2 and 3 on the second: each TP group inside one.
    for (int rank = 0; rank < 4; ++rank)
      EXPECT_NE(r.output.find(hosts_[rank / 2].name), std::string::npos) << r.output;
    EXPECT_EQ(r.output.find("warning: the TP group"), std::string::npos) << r.output;
    test_util::expect_same_training(run(name), run("one"), run("perturbed"), 2, tensors);
  }
}

TEST_F(SeveralHosts, KillingEveryProcessOfAHostEndsTheJobWithinTenSeconds) {
  test_util::CommandResult r;
  std::thread job([&] { r = run_across_hosts(train("killed", 100000) + " --tp 2"); });
  const std::string metrics = dir / "killed.jsonl";
  for (int i = 0; i < 6000 && !(fs::exists(metrics) && fs::file_size(metrics) > 0); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  const bool started = fs::exists(metrics) && fs::file_size(metrics) > 0;
  // Every process in the second host's network namespace: its orted and ranks.
  const auto killed = run_shell("ip netns pids " + hosts_[1].netns + " | xargs -r kill -9");
  const auto at = std::chrono::steady_clock::now();
  if (!started) run_shell("ip netns pids " + hosts_[0].netns + " | xargs -r kill -9");  // not to wait forever
  job.join();
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - at).count();
  ASSERT_TRUE(started) << "no step was logged within 60 s\n" << r.output;
  EXPECT_EQ(killed.status, 0) << killed.output;
  EXPECT_NE(r.status, 0) << r.output;
  EXPECT_LT(seconds, 10.0) << r.output;
}

}  // namespace
}  // namespace mt
