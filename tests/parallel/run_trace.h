// A training run recorded step by step, and the comparison at the heart of
// the layout tests: a layout's run against the one-rank run of the same
// model, in float32 and float64 within the bound of tests/rounding_bound.h,
// up to the first routing flip.
#pragma once

#include <gtest/gtest.h>
#include <mpi.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "model/transformer.h"
#include "rounding_bound.h"

namespace mt::test_util {

struct StepTrace {
  double loss = 0.0, grad_norm = 0.0;
  RoutingRecord routing;                 // the whole model's expert load in the step
  std::vector<float> expert_bias;        // [layers * E] after the step (--moe-router-enable-expert-bias)
  std::vector<double> weights;           // this rank's flat weights after the update, padding included
};

struct RunTrace {
  std::vector<ParamTensor> tensors;  // this rank's tensor table
  std::vector<StepTrace> steps;

  // Whether the expert bias left zero after any step (it may come back).
  bool expert_bias_moved() const {
    for (const StepTrace& s : steps)
      if (std::any_of(s.expert_bias.begin(), s.expert_bias.end(), [](float b) { return b != 0.0f; })) return true;
    return false;
  }

  // After a step's update: its loss and norm, the expert load summed over
  // `group` (nullptr: one rank holds the model), this rank's weights.
  // Clears the model's expert load. Collective over group.
  template <typename T>
  void record(Transformer<T>& model, double loss, double grad_norm, Communicator* group = nullptr) {
    if (tensors.empty()) tensors = model.params().tensors;
    const ExpertLoad load = model.model_expert_load(group);
    model.expert_load().clear();
    StepTrace s{loss, grad_norm, {load.routed, load.dropped, load.hash}, load.bias, {}};
    const Parameters<T>& p = model.params();
    s.weights.assign(p.values.data(), p.values.data() + p.padded_size());
    steps.push_back(std::move(s));
  }
};

// The flat offset, in a one-rank run, of each logical element of the
// layout's tensor t, found once per tensor rather than per element.
inline std::vector<size_t> reference_offsets(const RunTrace& ref, const ParamTensor& t) {
  std::vector<size_t> at;
  for (const ParamTensor& rt : ref.tensors)
    if (rt.name == t.name)
      for (size_t i = 0; i < t.numel; ++i) at.push_back(rt.offset + t.logical_index(i));
  EXPECT_EQ(at.size(), t.numel) << "no tensor " << t.name << " in the reference";
  at.resize(t.numel, 0);
  return at;
}

// The one-rank run's two twins, its weights moved by +1 ulp and by -1 ulp
// (opposite signs element by element), as one trace of whichever lies
// farther from the reference at each step and element: one draw of rounding
// can land close to the reference at a sensitive step (a gradient spike)
// where the layout's does not; two independent draws rarely both do.
inline RunTrace farther_of(const RunTrace& ref, const RunTrace& a, const RunTrace& b) {
  RunTrace out = a;
  for (size_t s = 0; s < std::min({ref.steps.size(), a.steps.size(), b.steps.size()}); ++s) {
    const StepTrace &r = ref.steps[s], &x = a.steps[s], &y = b.steps[s];
    StepTrace& o = out.steps[s];
    if (std::abs(y.loss - r.loss) > std::abs(x.loss - r.loss)) o.loss = y.loss;
    if (std::abs(y.grad_norm - r.grad_norm) > std::abs(x.grad_norm - r.grad_norm)) o.grad_norm = y.grad_norm;
    if (!(y.routing == r.routing)) o.routing = y.routing;  // either twin's flip ends the comparison
    for (size_t i = 0; i < o.weights.size(); ++i)
      if (std::abs(y.weights[i] - r.weights[i]) > std::abs(x.weights[i] - r.weights[i])) o.weights[i] = y.weights[i];
  }
  return out;
}

// Docs/testing.md: the layout's deviation from the one-rank run stays within
// rounding_multiple(largest_group) times that of the one-rank run whose
// weights were moved by one ulp at the start and after every update, plus a
// floor of `ulp`s, for the loss, the gradient norm and the weights, step by
// step until the first step any of the three runs routes differently.
// largest_group: the most ranks a sum is split over (TP or DP). Returns the
// number of steps compared.
inline int expect_same_run_to_rounding(const RunTrace& layout, const RunTrace& ref, const RunTrace& perturbed,
                                       int largest_group, double ulp = double(FLT_EPSILON)) {
  EXPECT_EQ(layout.steps.size(), ref.steps.size());
  EXPECT_EQ(perturbed.steps.size(), ref.steps.size());
  const double multiple = rounding_multiple(largest_group);
  RoundingScale loss_scale(multiple, ulp), norm_scale(multiple, ulp);
  double parameters = 0;  // the gradient norm sums over all of them
  for (const ParamTensor& t : ref.tensors) parameters += double(t.numel);
  WeightBound weights(multiple, ulp);
  size_t s = 0;
  for (; s < std::min(layout.steps.size(), ref.steps.size()); ++s) {
    const StepTrace &mine = layout.steps[s], &want = ref.steps[s], &moved = perturbed.steps[s];
    if (!(mine.routing == want.routing) || !(moved.routing == want.routing))
      break;  // a routing flip: nothing from here on is comparable
    // The bias moves by the steps' token counts alone, equal so far.
    EXPECT_EQ(mine.expert_bias, want.expert_bias) << "expert bias after step " << s + 1;
    EXPECT_LE(std::abs(mine.loss - want.loss),
              loss_scale.bound(std::abs(moved.loss - want.loss), std::abs(want.loss)))
        << "loss at step " << s + 1 << "; the perturbed run's is " << moved.loss - want.loss << " off";
    EXPECT_LE(std::abs(mine.grad_norm - want.grad_norm),
              norm_scale.bound(std::abs(moved.grad_norm - want.grad_norm), want.grad_norm, parameters))
        << "grad norm at step " << s + 1 << "; the perturbed run's is " << moved.grad_norm - want.grad_norm
        << " off";
    std::vector<TensorValues> tensors;
    for (const ParamTensor& t : layout.tensors) {
      const std::vector<size_t> at = reference_offsets(ref, t);  // the perturbed run's table is the same
      TensorValues v{t.name, {}, {}, {}};
      for (size_t i = 0; i < t.numel; ++i) {
        v.mine.push_back(mine.weights[t.offset + i]);
        v.reference.push_back(want.weights[at[i]]);
        v.perturbed.push_back(moved.weights[at[i]]);
      }
      tensors.push_back(std::move(v));
    }
    weights.expect_within(tensors, " after step " + std::to_string(s + 1));
  }
  EXPECT_GE(s, 1u) << "routing flipped at the first step";
  ::testing::Test::RecordProperty("steps_compared", int(s));
  return int(s);
}

// A trace as bytes and back: what a reference needs (tensor names and
// offsets, every step), for broadcast_run.
class TraceBytes {
 public:
  std::vector<char> bytes;
  size_t at = 0;
  template <typename V>
  void put(const V& v) {
    const char* p = reinterpret_cast<const char*>(&v);
    bytes.insert(bytes.end(), p, p + sizeof(V));
  }
  template <typename V>
  void put(const std::vector<V>& v) {
    put(v.size());
    const char* p = reinterpret_cast<const char*>(v.data());
    bytes.insert(bytes.end(), p, p + v.size() * sizeof(V));
  }
  template <typename V>
  void get(V& v) {
    std::memcpy(&v, bytes.data() + at, sizeof(V));
    at += sizeof(V);
  }
  template <typename V>
  void get(std::vector<V>& v) {
    size_t n = 0;
    get(n);
    v.resize(n);
    std::memcpy(v.data(), bytes.data() + at, n * sizeof(V));
    at += n * sizeof(V);
  }
};

// What a step trace holds, field by field, for TraceBytes to put or get.
template <class Step, class F>
void for_each_field(Step& st, F&& f) {
  f(st.loss);
  f(st.grad_norm);
  f(st.routing.routed);
  f(st.routing.dropped);
  f(st.routing.hash);
  f(st.expert_bias);
  f(st.weights);
}

// Rank `root`'s run to every rank of `comm`.
inline void broadcast_run(RunTrace& run, int root, MPI_Comm comm) {
  int rank = 0;
  MPI_Comm_rank(comm, &rank);
  TraceBytes b;
  if (rank == root) {
    b.put(run.tensors.size());
    for (const ParamTensor& t : run.tensors) {
      b.put(std::vector<char>(t.name.begin(), t.name.end()));
      b.put(t.offset);
    }
    b.put(run.steps.size());
    for (const StepTrace& st : run.steps) for_each_field(st, [&](const auto& v) { b.put(v); });
  }
  size_t size = b.bytes.size();
  MPI_Bcast(&size, sizeof(size), MPI_BYTE, root, comm);
  b.bytes.resize(size);
  MPI_Bcast(b.bytes.data(), int(size), MPI_BYTE, root, comm);
  if (rank == root) return;
  size_t tensors = 0, steps = 0;
  b.get(tensors);
  run.tensors.resize(tensors);
  for (ParamTensor& t : run.tensors) {
    std::vector<char> name;
    b.get(name);
    t.name.assign(name.begin(), name.end());
    b.get(t.offset);
  }
  b.get(steps);
  run.steps.resize(steps);
  for (StepTrace& st : run.steps) for_each_field(st, [&](auto& v) { b.get(v); });
}

// The layout's run against the one-rank run in precision T, with the scale
// of rounding measured by the one-rank run's twins moved by +-1 ulp of T:
// `reference(perturbation)` trains the one-rank run. Ranks 0, 1 and 2 of
// the world train one of the three runs each and broadcast it, rather than
// every rank training all three (at 15 ranks on 2 cores, most of a test's
// time). Float32 compares up to the first routing flip; float64 rounding
// is too small to flip a route, so there every step must compare.
template <typename T, class Reference>
void expect_trains_like_one_rank(const RunTrace& layout, Reference reference, int largest_group) {
  const double ulp = double(std::numeric_limits<T>::epsilon());
  int world = 1, rank = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  const double perturbations[3] = {0.0, ulp, -ulp};
  RunTrace runs[3];
  for (int i = 0; i < 3; ++i)
    if (i % world == rank) runs[i] = reference(perturbations[i]);
  for (int i = 0; i < 3; ++i) broadcast_run(runs[i], i % world, MPI_COMM_WORLD);
  const RunTrace& ref = runs[0];
  const RunTrace twins = farther_of(ref, runs[1], runs[2]);
  const int compared = expect_same_run_to_rounding(layout, ref, twins, largest_group, ulp);
  if constexpr (std::is_same_v<T, double>) {
    EXPECT_EQ(size_t(compared), ref.steps.size()) << "a float64 routing flip";
  }
}

}  // namespace mt::test_util
