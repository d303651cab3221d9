// Loss and gradients against an independent PyTorch implementation of
// docs/design.md section 3 (scripts/pytorch_reference/make_torch_reference.py,
// output committed in tests/fixtures/torch_reference.h5): in double to near
// machine precision, and in float, the precision training runs in.
#include <gtest/gtest.h>

#include <cmath>

#include "model/transformer.h"
#include "checkpoint/hdf5_file.h"

namespace mt {
namespace {

const std::string kReference = std::string(MT_FIXTURES_DIR) + "/torch_reference.h5";

ModelConfig case_config(const H5File& f, const std::string& c) {
  auto i = [&](const char* name) { return int(f.attr_int(name, c)); };
  ModelConfig cfg{.vocab_size = i("V"), .hidden_size = i("d"), .num_layers = i("L"), .num_heads = i("H"),
                  .num_query_groups = i("G"), .ffn_hidden_size = i("F"), .num_experts = i("E"),
                  .router_topk = i("K"), .seq_length = i("S"),
                  .capacity_factor = f.attr_double("capacity_factor", c),
                  .aux_loss_coeff = f.attr_double("aux_coeff", c),
                  .z_loss_coeff = f.attr_double("z_coeff", c)};
  return cfg;
}

template <typename T>
void check_case(const std::string& c, double loss_tol, double grad_tol) {
  H5File f = H5File::open(kReference, MPI_COMM_WORLD);
  const ModelConfig cfg = case_config(f, c);
  const int B = int(f.attr_int("B", c));
  auto be = make_cpu_backend<T>();
  Transformer<T> model(*be, cfg, B);
  Parameters<T>& p = model.params();
  for (const ParamTensor& t : p.tensors) {
    const std::string name = c + "/model/" + t.name;
    ASSERT_TRUE(f.exists(name)) << name;
    ASSERT_EQ(f.shape(name), std::vector<uint64_t>(t.shape.begin(), t.shape.end())) << name;
    std::vector<T> v = f.read_all<T>(name);
    be->from_host(p.values.data() + t.offset, v.data(), v.size());
  }
  std::vector<int32_t> tokens = f.read_all<int32_t>(c + "/tokens");
  ASSERT_EQ(tokens.size(), size_t(B) * (cfg.seq_length + 1));

  const double n = double(B) * cfg.seq_length;
  MicroBatchLoss loss = model.forward_backward(tokens.data(), B, 1.0 / n, 1.0);
  EXPECT_NEAR(loss.ce_sum / n, f.attr_double("ce_loss", c), loss_tol) << c;
  EXPECT_NEAR(loss.aux, f.attr_double("aux_loss", c), loss_tol) << c;
  EXPECT_NEAR(loss.z, f.attr_double("z_loss", c), loss_tol) << c;

  for (const ParamTensor& t : p.tensors) {
    std::vector<double> ref = f.read_all<double>(c + "/grads/" + t.name);
    double err = 0, scale = 0;
    for (size_t i = 0; i < t.numel; ++i) {
      err = std::max(err, std::abs(double(p.grads.data()[t.offset + i]) - ref[i]));
      scale = std::max(scale, std::abs(ref[i]));
    }
    EXPECT_LE(err, grad_tol * std::max(scale, 1e-3)) << c << " gradient of " << t.name
                                                     << " (max |ref| " << scale << ")";
  }
}

class TorchReference : public ::testing::TestWithParam<std::string> {};

TEST_P(TorchReference, DoubleMatchesToRoundoff) { check_case<double>(GetParam(), 1e-10, 1e-8); }
TEST_P(TorchReference, FloatMatchesWithinFloatTolerance) {
  check_case<float>(GetParam(), 2e-5, 2e-3);
}

TEST(TorchReference, ZLossCaseHasAZLoss) {
  H5File f = H5File::open(kReference, MPI_COMM_WORLD);
  EXPECT_GT(f.attr_double("z_loss", "moe_mqa_zloss"), 1e-3);
  EXPECT_EQ(f.attr_double("z_loss", "moe_mqa"), 0.0);
}

TEST(TorchReference, CapacityCaseReallyDrops) {
  H5File f = H5File::open(kReference, MPI_COMM_WORLD);
  EXPECT_GT(f.attr_int("dropped", "moe_gqa_capacity"), 0);
}

INSTANTIATE_TEST_SUITE_P(Cases, TorchReference,
                         ::testing::Values("moe_mqa", "moe_gqa_capacity", "moe_mqa_zloss", "dense"));

}  // namespace
}  // namespace mt
