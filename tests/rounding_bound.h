// The bound of the equivalence tests (docs/testing.md, "Rounding bounds"),
// in float32 and, with DBL_EPSILON for FLT_EPSILON, in float64. A layout's
// run and the one-rank run are two roundings of the same arithmetic, and they drift apart as training
// amplifies rounding (Adam turns noise in near-zero gradients into whole
// updates; a step's update moves the next step's activations). How far is
// measured in the same test, with the same data and dynamics: a second
// one-rank run whose weights are moved by one ulp each
// (kPerturbation in float32) at the start and after every update, as if every weight
// had been rounded the other way once a step. The layout may deviate a
// small multiple of that (rounding_multiple),
// plus a floor for the first step, before anything has been amplified.
//
// A routing flip (a near-tie in top-K resolved the other way by rounding) is
// a discontinuity no rounding bound covers: the runs are compared only up to
// the first step whose routing differs (RoutingRecord).
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace mt::test_util {

// The relative change of every weight in the perturbed run, at the start and
// after every update (moetrain train --debug-perturb-weights): one float32
// ulp, as if each weight had been rounded the other way once a step.
constexpr double kPerturbation = double(FLT_EPSILON);

// How many times the perturbed run's deviation a layout may deviate. Sums
// split over a group of P ranks and then all-reduced go through up to
// 1 + log2(P) roundings where one rank's go through one; and the two runs
// are random draws of rounding, which a factor of 4 allows for.
inline double rounding_multiple(int largest_group) {
  return 4.0 * (1.0 + std::log2(double(std::max(1, largest_group))));
}

// One step of float32 arithmetic through reductions of up to a few thousand
// terms: about sqrt(4096) = 64 ulps of the value.
constexpr double kFloorUlps = 64.0;

// One quantity over a run (a step's loss, a tensor's weights): the bound at
// a step is the multiple of the largest reference deviation so far plus a
// floor: kFloorUlps of the quantity's magnitude, or sqrt(terms) ulps for a
// quantity summed over that many terms (a gradient norm over every
// parameter), as rounding errors add up like a random walk. The floor is
// what no measured scale covers: a badly conditioned step (a sum of
// partials that nearly cancel) is rounded differently by a reordered sum
// than by moved weights.
// `ulp`: the unit roundoff of the precision compared (FLT_EPSILON, or
// DBL_EPSILON for float64 runs).
class RoundingScale {
 public:
  explicit RoundingScale(double multiple = rounding_multiple(1), double ulp = double(FLT_EPSILON))
      : multiple_(multiple), ulp_(ulp) {}
  double bound(double reference_deviation, double magnitude, double terms = 0.0) {
    worst_ = std::max(worst_, reference_deviation);
    return multiple_ * worst_ + std::max(kFloorUlps, std::sqrt(terms)) * ulp_ * magnitude;
  }

 private:
  double multiple_, ulp_;
  double worst_ = 0.0;
};

// Two runs route alike at a step when every expert of every layer received
// the same tokens and dropped as many (ExpertLoad: counts and hash).
struct RoutingRecord {
  std::vector<int64_t> routed, dropped, hash;
  bool operator==(const RoutingRecord&) const = default;
};

// The q-quantile of the values (q = 1: the largest).
inline double quantile(std::vector<double> values, double q) {
  if (values.empty()) return 0.0;
  const size_t k = std::min(values.size() - 1, size_t(q * double(values.size() - 1) + 0.5));
  std::nth_element(values.begin(), values.begin() + std::ptrdiff_t(k), values.end());
  return values[k];
}

// One tensor's values in the three runs, element by element.
struct TensorValues {
  std::string name;
  std::vector<double> mine, reference, perturbed;
};

// Weights (or Adam moments) by two robust statistics rather than the largest
// deviation: Adam divides a near-zero gradient by sqrt(v) + eps, so an
// element whose gradient is about eps takes a random share of a whole step
// from a few ulps of noise (Cauchy-tailed: a few elements of any two runs,
// not the same ones in each pair). Each tensor's median |deviation| against
// that of the same elements in the perturbed run catches an error in a whole
// tensor; the 99th percentile over all the tensors (each deviation relative
// to its tensor's largest value, so norm weights near 1 and projections near
// 0.02 count alike) one in more than 1% of them, a ZeRO-1 bucket say.
class WeightBound {
 public:
  explicit WeightBound(double multiple, double ulp = double(FLT_EPSILON))
      : multiple_(multiple), ulp_(ulp), q99_(multiple, ulp) {}

  void expect_within(const std::vector<TensorValues>& tensors, const std::string& when) {
    std::vector<double> all_mine, all_moved;
    for (const TensorValues& t : tensors) {
      std::vector<double> devs, moved_devs;
      double magnitude = 0;
      for (size_t i = 0; i < t.reference.size(); ++i) {
        devs.push_back(std::abs(t.mine[i] - t.reference[i]));
        moved_devs.push_back(std::abs(t.perturbed[i] - t.reference[i]));
        magnitude = std::max(magnitude, std::abs(t.reference[i]));
      }
      const double median = quantile(devs, 0.5), moved_median = quantile(moved_devs, 0.5);
      EXPECT_LE(median, median_.try_emplace(t.name, multiple_, ulp_).first->second.bound(moved_median, magnitude))
          << t.name << when << " (median |deviation|; the perturbed run's is " << moved_median << ")";
      for (size_t i = 0; i < devs.size(); ++i) {
        all_mine.push_back(devs[i] / std::max(magnitude, 1e-30));
        all_moved.push_back(moved_devs[i] / std::max(magnitude, 1e-30));
      }
    }
    const double q99 = quantile(all_mine, 0.99), moved_q99 = quantile(all_moved, 0.99);
    EXPECT_LE(q99, q99_.bound(moved_q99, 1.0))
        << "99th percentile of |deviation| / tensor magnitude" << when << " (the perturbed run's is " << moved_q99
        << ")";
  }

 private:
  double multiple_, ulp_;
  std::map<std::string, RoundingScale> median_;
  RoundingScale q99_;
};

}  // namespace mt::test_util
