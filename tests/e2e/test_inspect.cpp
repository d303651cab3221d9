// `moetrain inspect` and the checkpoint file as outside tools see it: a real
// training run on 8 ranks (TP2 x PP2 x DP2, so every rank writes a slice)
// saves a checkpoint once for the suite; inspect's tables and JSON must list
// every tensor of the schema with the norms the file holds, and h5py, the
// HDF5 C API (without the project's reader), h5dump and the PyTorch model of
// scripts/pytorch_reference/torch_model.py must read the file as it is.
#include <fmt/ranges.h>
#include <gtest/gtest.h>
#include <hdf5.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <regex>
#include <sstream>

#include "model/parameters.h"
#include "run_moetrain.h"

namespace mt {
namespace {

using test_util::run_moetrain;

// Every dataset the schema (docs/design.md section 6) puts in a checkpoint of
// `cfg`, with its logical shape.
std::map<std::string, std::vector<uint64_t>> expected_datasets(const ModelConfig& cfg) {
  std::map<std::string, std::vector<uint64_t>> out;
  for (const ParamTensor& t : param_table(cfg))
    for (const char* group : {"model/", "optim/exp_avg/", "optim/exp_avg_sq/"})
      out[group + t.name] = std::vector<uint64_t>(t.shape.begin(), t.shape.end());
  return out;
}

double norm_of(const std::vector<float>& v) {
  double s = 0;
  for (float x : v) s += double(x) * double(x);
  return std::sqrt(s);
}

// Relative agreement of two norms of the same float32 data summed in double
// in different orders (or printed with 9 significant digits).
void expect_same_norm(double got, double want, const std::string& what) {
  EXPECT_NEAR(got, want, 1e-6 * std::max(want, 1e-30)) << what;
}

// The JSON object on the last line of a tool's output (a warning on stderr
// may come before it).
nlohmann::json last_json(const std::string& text) {
  const size_t end = text.find_last_not_of('\n');
  const size_t begin = end == std::string::npos ? 0 : text.rfind('\n', end);
  return nlohmann::json::parse(text.substr(begin == std::string::npos ? 0 : begin + 1));
}

class Inspect : public ::testing::Test {
 protected:
  // One 2-step training run for every test of the suite: it is the slow part.
  static void SetUpTestSuite() {
    const auto r = test_util::shared_fixture_dir("inspect", [](const std::string& dir) {
      test_util::make_store(dir, "store", test_util::synthetic_text(20000, 5));
      return run_moetrain("train " + test_util::tiny_model_flags() + " --tp 2 --pp 2 --data-path " + dir +
                              "/store --lr-warmup-samples 8 --train-iters 2 --save " + dir + "/ckpt",
                          8);
    });
    ASSERT_EQ(r.status, 0) << r.output;
    shared_ = new std::string(r.output);
  }
  static void TearDownTestSuite() {
    delete shared_;
    shared_ = nullptr;
  }
  void SetUp() override {
    ASSERT_TRUE(shared_ && std::filesystem::exists(file())) << "the suite's training run saved nothing";
  }

  static std::string store() { return *shared_ + "/store"; }
  static std::string save_dir() { return *shared_ + "/ckpt"; }
  static std::string file() { return save_dir() + "/iter_0000002/checkpoint.h5"; }

  // Norm of every dataset through the project's reader.
  static std::map<std::string, double> project_norms() {
    H5File f = H5File::open(file(), MPI_COMM_SELF);
    std::map<std::string, double> out;
    for (const auto& [name, shape] : expected_datasets(test_util::tiny_model_config())) out[name] = norm_of(f.read_all<float>(name));
    return out;
  }

  static std::string* shared_;  // the suite's store and checkpoint, read only
  test_util::TempDir dir_;       // what a test writes
};

std::string* Inspect::shared_ = nullptr;

TEST_F(Inspect, TablesListAttributesTensorsAndTheNormsTheFileHolds) {
  const auto r = run_moetrain("inspect " + save_dir());  // resolves through SAVE/latest
  ASSERT_EQ(r.status, 0) << r.output;
  const std::string& out = r.output;
  EXPECT_NE(out.find("iter_0000002/checkpoint.h5"), std::string::npos) << out;
  EXPECT_TRUE(std::regex_search(out, std::regex(R"(\n  iteration +2\n)"))) << out;
  EXPECT_TRUE(std::regex_search(out, std::regex(R"(\n  format_version +\d+\n)"))) << out;
  // The config attribute pretty-printed, not one long JSON line.
  EXPECT_TRUE(std::regex_search(out, std::regex(R"(\n  config +\{\n +"[a-z_0-9]+": )"))) << out;
  EXPECT_TRUE(std::regex_search(out, std::regex(R"(\n +"hidden_size": 64,?\n)"))) << out;
  EXPECT_TRUE(std::regex_search(out, std::regex(R"(\n +"tp": 2,?\n)"))) << out;  // the layout

  // Every tensor line: name, shape, dtype, norm.
  std::map<std::string, std::pair<std::string, double>> printed;  // name -> (shape, norm)
  const std::regex row(R"(^  ((?:model|optim)/\S+) +(\[[0-9, ]*\]) +(\S+) +(\S+)$)");
  std::istringstream lines(out);
  for (std::string line; std::getline(lines, line);) {
    std::smatch m;
    if (!std::regex_match(line, m, row)) continue;
    EXPECT_EQ(m[3], "float32") << line;
    printed[m[1]] = {m[2], std::stod(m[4])};
  }
  const auto expected = expected_datasets(test_util::tiny_model_config());
  EXPECT_EQ(printed.size(), expected.size()) << out;
  const auto norms = project_norms();
  for (const auto& [name, shape] : expected) {
    ASSERT_TRUE(printed.count(name)) << "no row for " << name << " in:\n" << out;
    EXPECT_EQ(printed[name].first, fmt::format("[{}]", fmt::join(shape, ", "))) << name;
    expect_same_norm(printed[name].second, norms.at(name), name);
  }
  // Layers in numeric order, each layer's tensors together.
  EXPECT_LT(out.find("model/layers/0/wq"), out.find("model/layers/1/attn_norm")) << out;

  long long params = 0;
  for (const ParamTensor& t : param_table(test_util::tiny_model_config())) params += (long long)t.numel;
  EXPECT_EQ(params, test_util::tiny_model_config().num_parameters());
  EXPECT_NE(out.find(fmt::format("parameters (model/): {} ", params)), std::string::npos) << out;

  // The iteration directory and the file itself name the same checkpoint.
  for (const std::string& path : {save_dir() + "/iter_0000002", file()}) {
    const auto again = run_moetrain("inspect " + path);
    EXPECT_EQ(again.status, 0) << again.output;
    EXPECT_EQ(again.output, out) << path;
  }
}

TEST_F(Inspect, JsonHasEveryTensorOfTheSchemaAndTheParsedAttributes) {
  const auto r = run_moetrain("inspect --json " + save_dir());
  ASSERT_EQ(r.status, 0) << r.output;
  const nlohmann::json j = nlohmann::json::parse(r.output);  // the whole output is one object

  const nlohmann::json& attrs = j.at("attributes");
  EXPECT_EQ(attrs.at("iteration"), 2);
  EXPECT_EQ(attrs.at("consumed_samples"), 16);  // 2 steps of 8
  EXPECT_EQ(attrs.at("consumed_tokens"), 16 * 64);
  EXPECT_EQ(attrs.at("adam_step"), 2);
  EXPECT_EQ(attrs.at("seed"), 7);
  ASSERT_TRUE(attrs.at("config").is_object()) << attrs.dump(2);  // parsed, not a string
  EXPECT_EQ(attrs.at("config").at("model").at("num_experts"), 4);
  ASSERT_TRUE(attrs.at("layout").is_object()) << attrs.dump(2);
  EXPECT_EQ(attrs.at("layout"), (nlohmann::json{{"tp", 2}, {"pp", 2}, {"dp", 2}, {"ep", 1}, {"cp", 1}, {"world", 8}}));

  auto expected = expected_datasets(test_util::tiny_model_config());
  const auto norms = project_norms();
  for (const nlohmann::json& t : j.at("tensors")) {
    const std::string name = t.at("name");
    auto it = expected.find(name);
    ASSERT_NE(it, expected.end()) << "unexpected tensor " << name;
    EXPECT_EQ(t.at("shape").get<std::vector<uint64_t>>(), it->second) << name;
    EXPECT_EQ(t.at("dtype"), "float32") << name;
    expect_same_norm(t.at("norm"), norms.at(name), name);
    expected.erase(it);
  }
  for (const auto& [name, shape] : expected) ADD_FAILURE() << "--json lacks " << name;
  EXPECT_EQ(j.at("parameters"), test_util::tiny_model_config().num_parameters());
}

// A user's h5py script reads the file with no moetrain code: float32 arrays
// in their logical shapes with the norms the project's reader sees, the
// attributes as plain numbers and JSON strings, and blocks that hash to
// their recorded checksums.
TEST_F(Inspect, H5pyReadsTheFileAsItIs) {
  if (std::system("/usr/bin/python3 -c 'import h5py' >/dev/null 2>&1") != 0)
    GTEST_SKIP() << "no h5py for /usr/bin/python3 (apt-get install python3-h5py); the HDF5 C API test covers this";
  const std::string script = std::string(MT_SOURCE_DIR) + "/tests/e2e/read_checkpoint.py";
  const auto py = test_util::run_shell("/usr/bin/python3 " + script + " " + file());
  ASSERT_EQ(py.status, 0) << py.output;
  const std::string& output = py.output;
  const nlohmann::json j = last_json(output);

  EXPECT_EQ(j.at("attributes").at("iteration"), 2);
  EXPECT_EQ(j.at("attributes").at("config").at("model").at("hidden_size"), 64);
  EXPECT_EQ(j.at("attributes").at("layout").at("world"), 8);

  const auto expected = expected_datasets(test_util::tiny_model_config());
  const auto norms = project_norms();
  EXPECT_EQ(j.at("datasets").size(), expected.size()) << output;
  for (const auto& [name, shape] : expected) {
    ASSERT_TRUE(j.at("datasets").contains(name)) << "h5py sees no " << name;
    const nlohmann::json& d = j.at("datasets").at(name);
    EXPECT_EQ(d.at("dtype"), "float32") << name;
    EXPECT_EQ(d.at("shape").get<std::vector<uint64_t>>(), shape) << name;
    expect_same_norm(d.at("norm"), norms.at(name), name);
  }
  // Every block each rank wrote hashes, in h5py and python3-xxhash, to its
  // checksum: at least one a tensor.
  EXPECT_GE(j.at("checksums_verified").get<size_t>(), expected.size()) << output;
}

// The same through the HDF5 C API with the default (POSIX, not MPI-IO) file
// driver and none of the project's reader: what any HDF5 program sees.
// Compared with the norms `inspect --json` prints.
struct Hid {
  hid_t id;
  herr_t (*close)(hid_t);
  ~Hid() {
    if (id >= 0) close(id);
  }
};

herr_t collect_dataset(hid_t group, const char* name, const H5L_info_t*, void* out) {
  Hid obj{H5Oopen(group, name, H5P_DEFAULT), H5Oclose};
  if (obj.id >= 0 && H5Iget_type(obj.id) == H5I_DATASET) static_cast<std::vector<std::string>*>(out)->push_back(name);
  return 0;
}

TEST_F(Inspect, HdfCApiReadsTheFileWithoutTheProjectReader) {
  const auto r = run_moetrain("inspect --json " + file());
  ASSERT_EQ(r.status, 0) << r.output;
  const nlohmann::json listing = nlohmann::json::parse(r.output);
  std::map<std::string, double> inspect_norms;
  for (const nlohmann::json& t : listing.at("tensors")) inspect_norms[t.at("name").get<std::string>()] = t.at("norm");

  Hid f{H5Fopen(file().c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose};
  ASSERT_GE(f.id, 0) << file();
  std::vector<std::string> names;
  ASSERT_GE(H5Lvisit(f.id, H5_INDEX_NAME, H5_ITER_INC, collect_dataset, &names), 0);
  const auto expected = expected_datasets(test_util::tiny_model_config());
  EXPECT_EQ(names.size(), expected.size() + 1);  // and the checksum table
  EXPECT_NE(std::find(names.begin(), names.end(), H5File::kChecksumTable), names.end());

  for (const auto& [name, shape] : expected) {
    Hid d{H5Dopen2(f.id, name.c_str(), H5P_DEFAULT), H5Dclose};
    ASSERT_GE(d.id, 0) << "no dataset " << name;
    Hid type{H5Dget_type(d.id), H5Tclose};
    EXPECT_GT(H5Tequal(type.id, H5T_IEEE_F32LE), 0) << name << " is not little-endian float32";
    Hid space{H5Dget_space(d.id), H5Sclose};
    const int rank = H5Sget_simple_extent_ndims(space.id);
    std::vector<hsize_t> dims(size_t(std::max(rank, 0)));
    H5Sget_simple_extent_dims(space.id, dims.data(), nullptr);
    ASSERT_EQ(std::vector<uint64_t>(dims.begin(), dims.end()), shape) << name;
    std::vector<float> data(H5File::num_elements(shape));
    ASSERT_GE(H5Dread(d.id, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, data.data()), 0) << name;
    ASSERT_TRUE(inspect_norms.count(name)) << "inspect lists no " << name;
    expect_same_norm(inspect_norms[name], norm_of(data), name);
  }

  // The root attributes: a 64-bit integer and a UTF-8 variable-length string.
  Hid it{H5Aopen(f.id, "iteration", H5P_DEFAULT), H5Aclose};
  ASSERT_GE(it.id, 0);
  int64_t iteration = -1;
  ASSERT_GE(H5Aread(it.id, H5T_NATIVE_INT64, &iteration), 0);
  EXPECT_EQ(iteration, 2);
  Hid config{H5Aopen(f.id, "config", H5P_DEFAULT), H5Aclose};
  ASSERT_GE(config.id, 0);
  Hid str{H5Tcopy(H5T_C_S1), H5Tclose};
  H5Tset_size(str.id, H5T_VARIABLE);
  H5Tset_cset(str.id, H5T_CSET_UTF8);
  char* text = nullptr;
  ASSERT_GE(H5Aread(config.id, str.id, &text), 0);
  const nlohmann::json cfg = nlohmann::json::parse(text);
  H5free_memory(text);
  EXPECT_EQ(cfg.at("model").at("num_layers"), 2);
}

TEST_F(Inspect, H5dumpListsTheSchema) {
  if (std::system("command -v h5dump >/dev/null 2>&1") != 0)
    GTEST_SKIP() << "no h5dump (apt-get install hdf5-tools; scripts/install_deps.sh does)";
  const auto dump = test_util::run_shell("h5dump -H " + file());
  ASSERT_EQ(dump.status, 0) << dump.output;
  const std::string& out = dump.output;
  EXPECT_NE(out.find("GROUP \"model\""), std::string::npos) << out;
  // /model/embed, a [384, 64] IEEE float32.
  const std::regex embed(R"(DATASET "embed" \{\s*DATATYPE\s+H5T_IEEE_F32LE\s*DATASPACE\s+SIMPLE \{ \( 384, 64 \))");
  EXPECT_TRUE(std::regex_search(out, embed)) << out;
  EXPECT_NE(out.find("ATTRIBUTE \"config\""), std::string::npos) << out;
}

// Loaded with h5py into the independent PyTorch model, the weights give the
// cross-entropy `moetrain eval` computes: names, shapes and the [out, in]
// convention are what docs/design.md section 6 says.
TEST_F(Inspect, TorchModelLoadsTheCheckpointAndMatchesEval) {
  if (std::system("/usr/bin/python3 -c 'import h5py, torch' >/dev/null 2>&1") != 0)
    GTEST_SKIP() << "no torch or h5py for /usr/bin/python3 (scripts/install_deps.sh --torch)";
  const std::string script =
      std::string(MT_SOURCE_DIR) + "/scripts/pytorch_reference/checkpoint_to_torch.py";
  const auto py = test_util::run_shell("OMP_NUM_THREADS=1 /usr/bin/python3 " + script + " " + save_dir() + " --data-path " +
                              store() + " --eval-samples 8");
  ASSERT_EQ(py.status, 0) << py.output;
  const auto eval = run_moetrain("eval --load " + save_dir() + " --data-path " + store() + " --eval-samples 8");
  ASSERT_EQ(eval.status, 0) << eval.output;

  const nlohmann::json torch = last_json(py.output), ours = last_json(eval.output);
  EXPECT_EQ(torch.at("tokens"), ours.at("tokens"));
  EXPECT_NEAR(torch.at("loss").get<double>(), ours.at("loss").get<double>(), 1e-5) << py.output << eval.output;
}

// A bf16 run's checkpoint holds its float32 master weights: evaluated in
// float32 by moetrain and by the PyTorch model, they give the same loss.
TEST_F(Inspect, TorchModelMatchesEvalOfABf16RunsCheckpoint) {
  if (std::system("/usr/bin/python3 -c 'import h5py, torch' >/dev/null 2>&1") != 0)
    GTEST_SKIP() << "no torch or h5py for /usr/bin/python3 (scripts/install_deps.sh --torch)";
  const std::string bf16_dir = dir_ / "ckpt_bf16";
  const auto train = run_moetrain("train " + test_util::tiny_model_flags() + " --bf16 --data-path " + store() +
                                  " --lr-warmup-samples 8 --train-iters 2 --save " + bf16_dir);
  ASSERT_EQ(train.status, 0) << train.output;
  const std::string script =
      std::string(MT_SOURCE_DIR) + "/scripts/pytorch_reference/checkpoint_to_torch.py";
  const auto py = test_util::run_shell("OMP_NUM_THREADS=1 /usr/bin/python3 " + script + " " + bf16_dir + " --data-path " +
                              store() + " --eval-samples 8");
  ASSERT_EQ(py.status, 0) << py.output;
  const auto eval = run_moetrain("eval --load " + bf16_dir + " --data-path " + store() + " --eval-samples 8");
  ASSERT_EQ(eval.status, 0) << eval.output;
  const nlohmann::json torch = last_json(py.output), ours = last_json(eval.output);
  EXPECT_EQ(torch.at("tokens"), ours.at("tokens"));
  EXPECT_NEAR(torch.at("loss").get<double>(), ours.at("loss").get<double>(), 1e-5) << py.output << eval.output;
}

TEST_F(Inspect, UnderMpirunOneRankPrints) {
  const auto r = run_moetrain("inspect " + save_dir(), 2);
  ASSERT_EQ(r.status, 0) << r.output;
  size_t count = 0;
  for (size_t at = r.output.find("\ntensors:\n"); at != std::string::npos; at = r.output.find("\ntensors:\n", at + 1))
    ++count;
  EXPECT_EQ(count, 1u) << r.output;
}

TEST_F(Inspect, MissingPathAndNonHdf5FileFailNamingThePath) {
  const std::string missing = dir_ / "no_such_checkpoint";
  auto r = run_moetrain("inspect " + missing);
  EXPECT_NE(r.status, 0) << r.output;
  EXPECT_NE(r.output.find(missing + ": no such file or directory"), std::string::npos) << r.output;

  const std::string text = dir_ / "not_a_checkpoint.h5";
  test_util::write_text(text, "this is not HDF5\n");
  r = run_moetrain("inspect " + text);
  EXPECT_NE(r.status, 0) << r.output;
  EXPECT_NE(r.output.find(text), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("not an HDF5 file"), std::string::npos) << r.output;

  // A save directory whose `latest` names a checkpoint that is gone.
  const std::string broken = dir_ / "broken";
  std::filesystem::create_directories(broken);
  test_util::write_text(broken + "/latest", "5\n");
  r = run_moetrain("inspect " + broken);
  EXPECT_NE(r.status, 0) << r.output;
  EXPECT_NE(r.output.find(broken), std::string::npos) << r.output;
}

}  // namespace
}  // namespace mt
