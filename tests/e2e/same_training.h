// Float32 runs of the `moetrain` binary compared as tests/parallel/run_trace.h
// compares in-process runs (docs/testing.md): a layout's run against a
// reference run, with the scale of rounding measured by the reference's twin
// whose weights were moved by one ulp at the start and after every update
// (--debug-perturb-weights). The metrics (--log-interval 1) give each step's
// loss, gradient norm and expert load; the checkpoints the weights and Adam
// moments at the end.
#pragma once

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "checkpoint/checkpoint_dir.h"
#include "checkpoint/checkpoint_file.h"
#include "model/parameters.h"
#include "rounding_bound.h"
#include "run_moetrain.h"
#include "checkpoint/hdf5_file.h"

namespace mt::test_util {

// Every weight and Adam moment of two checkpoints, bit for bit.
inline void expect_identical_checkpoints(const std::string& a, const std::string& b) {
  H5File fa = H5File::open(a, MPI_COMM_SELF), fb = H5File::open(b, MPI_COMM_SELF);
  EXPECT_EQ(fa.attr_int("adam_step"), fb.attr_int("adam_step"));
  EXPECT_EQ(fa.attr_int("consumed_samples"), fb.attr_int("consumed_samples"));
  const ModelConfig cfg = model_config_from_json(nlohmann::json::parse(fa.attr_string("config")).at("model"));
  for (const ParamTensor& t : param_table(cfg))
    for (const std::string group : {"model/", "optim/exp_avg/", "optim/exp_avg_sq/"})
      EXPECT_TRUE(fa.read_all<float>(group + t.name) == fb.read_all<float>(group + t.name)) << group + t.name;
  for (const std::string& name : router_state_datasets(cfg)) {  // bytes: unset shares are NaN
    const std::vector<float> x = fa.read_all<float>(name), y = fb.read_all<float>(name);
    EXPECT_EQ(0, std::memcmp(x.data(), y.data(), std::min(x.size(), y.size()) * sizeof(float))) << name;
    EXPECT_EQ(x.size(), y.size()) << name;
  }
}

// The flags that make a run the perturbed twin of the same run without them:
// every weight moved by one ulp of the precision the run trains in (float32,
// or bf16's 2^-7 with --bf16, moving the float32 master weights by as much as
// a rounding of the bf16 weights does).
inline std::string perturbed_flags(double relative = kPerturbation) {
  return fmt::format(" --debug-perturb-weights {:.17g}", relative);
}

// A finished run: its metrics file and its last checkpoint.
struct BinaryRun {
  std::string metrics, checkpoint;
};

// A logged step's "experts" record, flattened.
inline RoutingRecord routing_record(const nlohmann::json& record) {
  RoutingRecord r;
  if (!record.contains("experts")) return r;
  const nlohmann::json& e = record["experts"];
  for (const auto& layer : e["routed"]) r.routed.insert(r.routed.end(), layer.begin(), layer.end());
  for (const auto& layer : e["dropped"]) r.dropped.insert(r.dropped.end(), layer.begin(), layer.end());
  r.hash = e["hash"].get<std::vector<int64_t>>();
  return r;
}

// `names` of three checkpoints (docs/testing.md, WeightBound).
inline void expect_same_tensors(const std::string& layout, const std::string& one, const std::string& perturbed,
                                const std::vector<std::string>& names, int largest_group) {
  H5File fl = H5File::open(layout, MPI_COMM_SELF), fo = H5File::open(one, MPI_COMM_SELF),
         fp = H5File::open(perturbed, MPI_COMM_SELF);
  std::vector<TensorValues> tensors;
  for (const std::string& name : names) {
    TensorValues v{name, fl.read_all<double>(name), fo.read_all<double>(name), fp.read_all<double>(name)};
    ASSERT_EQ(v.mine.size(), v.reference.size()) << name;
    ASSERT_EQ(v.perturbed.size(), v.reference.size()) << name;
    tensors.push_back(std::move(v));
  }
  WeightBound(rounding_multiple(largest_group)).expect_within(tensors, " in the final checkpoint");
}

// The layout's run against the reference `one`, whose first `skip` logged
// steps the layout did not run (it resumed after them): every step's loss and
// gradient norm within the derived bound until the first step any of the
// three runs routes differently, and, when none did, `tensors` of the final
// checkpoints. Returns the number of steps compared.
inline size_t expect_same_training(const BinaryRun& layout, const BinaryRun& one, const BinaryRun& perturbed,
                                   int largest_group, const std::vector<std::string>& tensors, size_t skip = 0) {
  const auto mine = read_metrics(layout.metrics), want = read_metrics(one.metrics),
             moved = read_metrics(perturbed.metrics);
  EXPECT_EQ(mine.size() + skip, want.size());
  EXPECT_EQ(moved.size(), want.size());
  const double multiple = rounding_multiple(largest_group);
  RoundingScale loss_scale(multiple), norm_scale(multiple);
  double parameters = 0;  // the gradient norm sums over all of them
  {
    H5File f = H5File::open(one.checkpoint, MPI_COMM_SELF);
    const nlohmann::json config = nlohmann::json::parse(f.attr_string("config"));
    for (const ParamTensor& t : param_table(model_config_from_json(config.at("model")))) parameters += double(t.numel);
  }
  // Deviations of the skipped steps count towards the scale.
  for (size_t k = 0; k < std::min({skip, want.size(), moved.size()}); ++k) {
    loss_scale.bound(std::abs(moved[k]["loss"].get<double>() - want[k]["loss"].get<double>()), 0.0);
    norm_scale.bound(std::abs(moved[k]["grad_norm"].get<double>() - want[k]["grad_norm"].get<double>()), 0.0);
  }
  size_t s = 0;
  for (; s < mine.size() && s + skip < std::min(want.size(), moved.size()); ++s) {
    const nlohmann::json &m = mine[s], &w = want[s + skip], &p = moved[s + skip];
    const RoutingRecord routing = routing_record(w);
    if (!(routing_record(m) == routing) || !(routing_record(p) == routing))
      break;  // a routing flip: nothing from here on is comparable
    // The expert bias moves by token counts alone, equal while routing is.
    if (w.contains("experts") && w["experts"].contains("bias")) {
      EXPECT_EQ(m.at("experts").at("bias"), w.at("experts").at("bias")) << "expert bias at step " << w["step"];
    }
    const double loss = w["loss"], norm = w["grad_norm"];
    EXPECT_LE(std::abs(m["loss"].get<double>() - loss),
              loss_scale.bound(std::abs(p["loss"].get<double>() - loss), loss))
        << "loss at step " << w["step"] << "; the perturbed run's is " << p["loss"].get<double>() - loss << " off";
    EXPECT_LE(std::abs(m["grad_norm"].get<double>() - norm),
              norm_scale.bound(std::abs(p["grad_norm"].get<double>() - norm), norm, parameters))
        << "grad norm at step " << w["step"] << "; the perturbed run's is " << p["grad_norm"].get<double>() - norm
        << " off";
  }
  EXPECT_GE(s, 1u) << "routing flipped at the first step";
  ::testing::Test::RecordProperty("steps_compared", int(s));
  if (s == mine.size())
    expect_same_tensors(layout.checkpoint, one.checkpoint, perturbed.checkpoint, tensors, largest_group);
  else
    std::printf("routing flipped at logged step %zu of %zu: the checkpoints are not compared\n", s + skip + 1,
                want.size());
  return s;
}

}  // namespace mt::test_util
