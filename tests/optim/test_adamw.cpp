// AdamW over a tiny model's Parameters<double>: decay on tensors of two or
// more dimensions only, global-norm clipping, the step count, non-finite
// gradients, and the whole update against PyTorch's AdamW written out here.
#include "optim/adamw.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "model/parameters.h"
#include "runtime/check.h"

namespace mt {
namespace {

ModelConfig tiny() {
  ModelConfig cfg{.vocab_size = 8, .hidden_size = 4, .num_layers = 1, .num_heads = 2, .num_query_groups = 1,
                  .ffn_hidden_size = 6, .num_experts = 2, .router_topk = 1, .seq_length = 4};
  return cfg;
}

class AdamWTest : public ::testing::Test {
 protected:
  std::unique_ptr<Backend<double>> be = make_cpu_backend<double>();
  ModelConfig cfg = tiny();
  Parameters<double> p{*be, cfg};
  std::mt19937 rng{99};

  void SetUp() override { p.initialise(*be, 17); }

  std::vector<double> host(const DeviceBuffer<double>& b) {
    std::vector<double> h(b.size());
    be->to_host(h.data(), b.data(), b.size());
    return h;
  }
  void set_grads(const std::vector<double>& g) { be->from_host(p.grads.data(), g.data(), g.size()); }
  std::vector<double> random_grads(double target_norm) {
    std::normal_distribution<double> n(0.0, 1.0);
    std::vector<double> g(p.size());
    double ss = 0.0;
    for (auto& x : g) {
      x = n(rng);
      ss += x * x;
    }
    for (auto& x : g) x *= target_norm / std::sqrt(ss);
    return g;
  }
};

TEST_F(AdamWTest, DecayFlagsFollowTheDimensions) {
  bool saw_1d = false, saw_2d = false, saw_3d = false;
  for (const ParamTensor& t : p.tensors) {
    EXPECT_EQ(t.weight_decay, t.shape.size() >= 2) << t.name;
    saw_1d |= t.shape.size() == 1;
    saw_2d |= t.shape.size() == 2;
    saw_3d |= t.shape.size() == 3;
  }
  EXPECT_TRUE(saw_1d && saw_2d && saw_3d);
}

TEST_F(AdamWTest, WeightDecayOnlyOnTensorsOfTwoOrMoreDimensions) {
  AdamWConfig oc;
  oc.weight_decay = 0.1;
  oc.clip_grad = 1.0;
  AdamW<double> opt(*be, oc, p);
  // Gradients are zero, so Adam's term is exactly 0 and only decay moves a value.
  const std::vector<double> before = host(p.values);
  be->fill(p.grads.data(), 0.0, p.size());
  const double lr = 0.01;
  opt.step(p, lr);
  const std::vector<double> after = host(p.values);
  for (const ParamTensor& t : p.tensors)
    for (size_t i = 0; i < t.numel; ++i) {
      const size_t j = t.offset + i;
      if (t.shape.size() >= 2)
        EXPECT_DOUBLE_EQ(after[j], before[j] * (1.0 - lr * oc.weight_decay)) << t.name << "[" << i << "]";
      else
        EXPECT_EQ(after[j], before[j]) << t.name << " (1-D) must not decay";
    }
  // Spot checks by name: a norm gain, a 2-D and a 3-D weight.
  EXPECT_EQ(after[p.find("layers/0/attn_norm").offset], 1.0);
  EXPECT_EQ(after[p.find("final_norm").offset], 1.0);
  const size_t w1 = p.find("layers/0/experts/w1").offset;
  EXPECT_DOUBLE_EQ(after[w1], before[w1] * 0.999);
  const size_t wq = p.find("layers/0/wq").offset;
  EXPECT_DOUBLE_EQ(after[wq], before[wq] * 0.999);
}

// PyTorch's AdamW, written out: the reference for the whole step.
struct RefAdamW {
  double b1, b2, eps, wd;
  std::vector<double> m, v;
  int64_t t = 0;
  void step(std::vector<double>& x, const std::vector<double>& g, const std::vector<ParamTensor>& ts,
            double lr) {
    ++t;
    const double bc1 = 1 - std::pow(b1, double(t)), bc2 = 1 - std::pow(b2, double(t));
    for (const ParamTensor& tensor : ts)
      for (size_t i = tensor.offset; i < tensor.offset + tensor.numel; ++i) {
        if (tensor.shape.size() >= 2) x[i] -= lr * wd * x[i];
        m[i] = b1 * m[i] + (1 - b1) * g[i];
        v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i];
        x[i] -= lr / bc1 * m[i] / (std::sqrt(v[i]) / std::sqrt(bc2) + eps);
      }
  }
};

void expect_vec_near(const std::vector<double>& a, const std::vector<double>& b, double rel,
                     const std::string& what) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i)
    EXPECT_NEAR(a[i], b[i], rel * std::max(1e-300, std::abs(b[i])) + 1e-300) << what << "[" << i << "]";
}

TEST_F(AdamWTest, ThreeStepsMatchPytorchAdamW) {
  AdamWConfig oc;
  oc.beta1 = 0.8;
  oc.beta2 = 0.9;
  oc.eps = 1e-3;
  oc.weight_decay = 0.2;
  oc.clip_grad = 0.0;
  AdamW<double> opt(*be, oc, p);
  RefAdamW ref{oc.beta1, oc.beta2, oc.eps, oc.weight_decay,
               std::vector<double>(p.size(), 0.0), std::vector<double>(p.size(), 0.0)};
  std::vector<double> x = host(p.values);
  EXPECT_EQ(opt.step_count(), 0);
  for (int s = 1; s <= 3; ++s) {
    const std::vector<double> g = random_grads(0.01 * s);
    set_grads(g);
    const double lr = 0.01 / s;
    opt.step(p, lr);
    ref.step(x, g, p.tensors, lr);
    EXPECT_EQ(opt.step_count(), s);
    expect_vec_near(host(p.values), x, 1e-12, "values step " + std::to_string(s));
    expect_vec_near(host(opt.exp_avg()), ref.m, 1e-12, "exp_avg step " + std::to_string(s));
    expect_vec_near(host(opt.exp_avg_sq()), ref.v, 1e-12, "exp_avg_sq step " + std::to_string(s));
  }
}

TEST_F(AdamWTest, ResumedStepCountDrivesBiasCorrection) {
  AdamWConfig oc;
  oc.eps = 1e-3;
  oc.clip_grad = 0.0;
  AdamW<double> opt(*be, oc, p);
  opt.set_step_count(9);
  RefAdamW ref{oc.beta1, oc.beta2, oc.eps, oc.weight_decay,
               std::vector<double>(p.size(), 0.0), std::vector<double>(p.size(), 0.0)};
  ref.t = 9;
  std::vector<double> x = host(p.values);
  const std::vector<double> g = random_grads(0.01);
  set_grads(g);
  opt.step(p, 0.01);
  ref.step(x, g, p.tensors, 0.01);
  EXPECT_EQ(opt.step_count(), 10);
  expect_vec_near(host(p.values), x, 1e-12, "values at step 10");
}

TEST_F(AdamWTest, GradNormIsSqrtOfSumOfSquares) {
  AdamW<double> opt(*be, AdamWConfig{}, p);
  std::uniform_real_distribution<double> u(-1, 1);
  std::vector<double> g(p.size());
  double ss = 0.0;
  for (auto& x : g) {
    x = u(rng);
    ss += x * x;
  }
  set_grads(g);
  EXPECT_NEAR(opt.grad_norm(p.grads.data()), std::sqrt(ss), 1e-12 * std::sqrt(ss));
  EXPECT_EQ(host(p.grads), g) << "grad_norm must not touch the gradients";
}

TEST_F(AdamWTest, ClipsToClipOverNormPlusEpsilon) {
  // Gradients of norm 10 with clip 1 must update as unclipped gradients
  // scaled by 1 / (10 + 1e-6). eps is large so the update depends on scale.
  AdamWConfig clipped;
  clipped.eps = 1e-2;
  clipped.clip_grad = 1.0;
  AdamWConfig unclipped = clipped;
  unclipped.clip_grad = 0.0;

  const std::vector<double> x0 = host(p.values);
  const std::vector<double> g = random_grads(10.0);
  AdamW<double> a(*be, clipped, p);
  set_grads(g);
  const double norm = a.step(p, 0.01);
  EXPECT_NEAR(norm, 10.0, 1e-12) << "step returns the pre-clip norm";
  const std::vector<double> xa = host(p.values), ma = host(a.exp_avg()), va = host(a.exp_avg_sq());

  be->from_host(p.values.data(), x0.data(), x0.size());
  std::vector<double> gs = g;
  for (auto& x : gs) x *= 1.0 / (10.0 + 1e-6);
  AdamW<double> b(*be, unclipped, p);
  set_grads(gs);
  b.step(p, 0.01);
  // The reference's scale differs from 1/10 by 1e-7 relative: tolerances are
  // well below that.
  expect_vec_near(host(b.exp_avg()), ma, 1e-12, "exp_avg");
  expect_vec_near(host(b.exp_avg_sq()), va, 1e-12, "exp_avg_sq");
  expect_vec_near(host(p.values), xa, 1e-12, "values");
}

TEST_F(AdamWTest, NoClippingBelowTheThreshold) {
  AdamWConfig clipped;
  clipped.eps = 1e-2;
  clipped.clip_grad = 1.0;
  AdamWConfig unclipped = clipped;
  unclipped.clip_grad = 0.0;
  const std::vector<double> x0 = host(p.values);
  const std::vector<double> g = random_grads(0.5);

  AdamW<double> a(*be, clipped, p);
  set_grads(g);
  EXPECT_NEAR(a.step(p, 0.01), 0.5, 1e-12);
  EXPECT_EQ(host(p.grads), g) << "gradients below the threshold are not scaled";
  const std::vector<double> xa = host(p.values);

  be->from_host(p.values.data(), x0.data(), x0.size());
  AdamW<double> b(*be, unclipped, p);
  set_grads(g);
  b.step(p, 0.01);
  EXPECT_EQ(host(p.values), xa);
  EXPECT_EQ(host(b.exp_avg()), host(a.exp_avg()));
}

TEST_F(AdamWTest, NonFiniteGradientThrowsAndLeavesStateAlone) {
  for (double bad : {std::numeric_limits<double>::quiet_NaN(),
                     std::numeric_limits<double>::infinity()}) {
    AdamW<double> opt(*be, AdamWConfig{}, p);
    std::vector<double> g = random_grads(1.0);
    g[p.find("layers/0/wv").offset + 1] = bad;
    set_grads(g);
    const std::vector<double> before = host(p.values);
    EXPECT_THROW(opt.step(p, 0.01), Error) << bad;
    EXPECT_EQ(opt.step_count(), 0);
    EXPECT_EQ(host(p.values), before);
  }
}

TEST(AdamWConfigTest, ValidateNamesTheFlag) {
  auto expect_invalid = [](AdamWConfig c, const std::string& flag) {
    try {
      validate(c);
      FAIL() << "expected mt::Error naming " << flag;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(flag), std::string::npos) << e.what();
    }
  };
  EXPECT_NO_THROW(validate(AdamWConfig{}));
  AdamWConfig c;
  c.beta1 = 1.0;
  expect_invalid(c, "--adam-beta1");
  c = AdamWConfig{};
  c.beta2 = -0.1;
  expect_invalid(c, "--adam-beta2");
  c = AdamWConfig{};
  c.eps = 0.0;
  expect_invalid(c, "--adam-eps");
  c = AdamWConfig{};
  c.weight_decay = -1;
  expect_invalid(c, "--weight-decay");
  c = AdamWConfig{};
  c.clip_grad = -1;
  expect_invalid(c, "--clip-grad");
}

}  // namespace
}  // namespace mt
