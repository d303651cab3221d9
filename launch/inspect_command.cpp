// `moetrain inspect PATH`: what a checkpoint holds, read through the same
// H5File reader training uses: every root attribute (the JSON ones
// pretty-printed), then every dataset with its shape, type and L2 norm, and
// the model's parameter count. --json prints the same as one JSON object, for
// scripts. Reads on one rank: under mpirun, rank 0 does the work.
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <mpi.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "checkpoint/checkpoint_dir.h"
#include "checkpoint/hdf5_file.h"
#include "launch/commands.h"
#include "runtime/check.h"

namespace mt {

namespace {

struct TensorSummary {
  std::string name;  // e.g. "model/layers/0/wq" (the path in the file, without the leading '/')
  std::vector<uint64_t> shape;
  std::string dtype;
  double norm = 0;
};

// An attribute as JSON: a number, a string, or, for a string holding a JSON
// object (`config`, `layout`, ...), that object.
nlohmann::json read_attribute(const H5File& f, const std::string& name) {
  switch (f.attr_kind(name)) {
    case H5File::AttrKind::Integer: return f.attr_int(name);
    case H5File::AttrKind::Float: return f.attr_double(name);
    case H5File::AttrKind::String: {
      const std::string s = f.attr_string(name);
      nlohmann::json parsed = nlohmann::json::parse(s, nullptr, /*allow_exceptions=*/false);
      return parsed.is_object() ? parsed : nlohmann::json(s);
    }
    default:  // an array or compound attribute from another writer
      return "<not a scalar number or string>";
  }
}

// "layers/2" before "layers/10": names that are all digits compare as numbers.
bool natural_less(const std::string& a, const std::string& b) {
  auto numeric = [](const std::string& s) {
    return !s.empty() && s.size() < 19 &&
           std::all_of(s.begin(), s.end(), [](unsigned char c) { return std::isdigit(c); });
  };
  if (numeric(a) && numeric(b)) return std::stoll(a) < std::stoll(b);
  return a < b;
}

// L2 norm in double, read a slab of leading rows at a time: one tensor of a
// large model (the experts' w1 of a layer) can be tens of GB.
double l2_norm(const H5File& f, const std::string& name, const std::vector<uint64_t>& shape) {
  constexpr uint64_t kSlabElements = uint64_t(1) << 24;  // 64 MB of float
  double sum = 0;
  if (shape.empty()) {  // a scalar dataset
    float v = 0;
    f.read(name, {}, {}, &v);
    return std::abs(double(v));
  }
  const uint64_t rows = shape[0];
  const uint64_t row_elems = H5File::num_elements(shape) / std::max<uint64_t>(rows, 1);
  if (rows == 0 || row_elems == 0) return 0;
  const uint64_t slab_rows = std::max<uint64_t>(1, kSlabElements / row_elems);
  std::vector<float> buf(std::min(rows, slab_rows) * row_elems);
  std::vector<uint64_t> offset(shape.size(), 0), count = shape;
  for (uint64_t r = 0; r < rows; r += slab_rows) {
    offset[0] = r;
    count[0] = std::min(slab_rows, rows - r);
    f.read(name, offset, count, buf.data());
    for (uint64_t i = 0; i < count[0] * row_elems; ++i) sum += double(buf[i]) * double(buf[i]);
  }
  return std::sqrt(sum);
}

void collect_tensors(const H5File& f, const std::string& group, std::vector<TensorSummary>& out) {
  std::vector<std::string> children = f.list(group);
  std::sort(children.begin(), children.end(), natural_less);
  for (const std::string& child : children) {
    const std::string name = group == "/" ? child : group + "/" + child;
    if (name == H5File::kChecksumTable) continue;  // the file's checksums (--verify), not a tensor
    if (!f.is_dataset(name)) {
      collect_tensors(f, name, out);
      continue;
    }
    TensorSummary t{name, f.shape(name), f.dtype_name(name)};
    t.norm = l2_norm(f, name, t.shape);
    out.push_back(std::move(t));
  }
}

std::string format_shape(const std::vector<uint64_t>& shape) { return fmt::format("[{}]", fmt::join(shape, ", ")); }

// Continuation lines of a multi-line value start under its first line.
std::string indent_after_first_line(const std::string& text, size_t column) {
  std::string out;
  for (char c : text) {
    out += c;
    if (c == '\n') out.append(column, ' ');
  }
  return out;
}

void print_text(const std::string& path, const nlohmann::json& attributes,
                const std::vector<TensorSummary>& tensors) {
  fmt::print("checkpoint {} ({:.1f} MB)\n\n", path, double(std::filesystem::file_size(path)) / 1e6);

  fmt::print("attributes:\n");
  size_t width = 0;
  for (const auto& [name, value] : attributes.items()) width = std::max(width, name.size());
  for (const auto& [name, value] : attributes.items()) {
    const std::string shown = value.is_string() ? value.get<std::string>()
                                                : value.dump(2, ' ', false, nlohmann::json::error_handler_t::replace);
    fmt::print("  {:<{}}  {}\n", name, width, indent_after_first_line(shown, width + 4));
  }

  size_t name_width = 4, shape_width = 5;
  for (const TensorSummary& t : tensors) {
    name_width = std::max(name_width, t.name.size());
    shape_width = std::max(shape_width, format_shape(t.shape).size());
  }
  fmt::print("\ntensors:\n  {:<{}}  {:<{}}  {:<8}  {}\n", "name", name_width, "shape", shape_width, "dtype", "norm");
  uint64_t parameters = 0, elements = 0;
  for (const TensorSummary& t : tensors) {
    fmt::print("  {:<{}}  {:<{}}  {:<8}  {:.9g}\n", t.name, name_width, format_shape(t.shape), shape_width, t.dtype,
               t.norm);
    elements += H5File::num_elements(t.shape);
    if (t.name.rfind("model/", 0) == 0) parameters += H5File::num_elements(t.shape);
  }
  fmt::print("\n{} tensors, {} elements; parameters (model/): {} ({:.2f} M)\n", tensors.size(), elements,
             parameters, double(parameters) / 1e6);
}

// --verify: every dataset's blocks read back and hashed against the
// checksums the writer recorded (checkpoint/hdf5_file.h).
struct Verification {
  size_t checked = 0;                  // datasets with checksums
  std::vector<std::string> damaged;    // "model/layers/1/wq block [0:64, 0:64]"
  std::vector<std::string> unchecked;  // datasets without checksums (another writer's)
};

Verification verify_datasets(const H5File& f) {
  Verification v;
  for (const std::string& name : f.datasets()) {
    if (name == H5File::kChecksumTable) {  // damaged when it does not read as a table
      for (const std::string& d : f.damaged_blocks(name)) v.damaged.push_back(d);
      continue;
    }
    if (!f.has_checksums(name)) {
      v.unchecked.push_back(name);
      continue;
    }
    ++v.checked;
    for (const std::string& d : f.damaged_blocks(name)) v.damaged.push_back(name + " " + d);
  }
  return v;
}

void print_verification(const Verification& v) {
  fmt::print("\nverify: {} datasets read back against their checksums: {}\n", v.checked,
             v.damaged.empty() ? "all intact"
                                : fmt::format("{} damaged block{}", v.damaged.size(), v.damaged.size() == 1 ? "" : "s"));
  for (const std::string& d : v.damaged) fmt::print("  DAMAGED {}\n", d);
  if (!v.unchecked.empty())
    fmt::print("  {} datasets have no checksums to check: {}\n", v.unchecked.size(), fmt::join(v.unchecked, ", "));
}

}  // namespace

void run_inspect(const InspectOptions& o) {
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  if (rank != 0) return;  // one reader is enough; the others have nothing to do
  MT_CHECK(!o.path.empty(), "inspect needs a PATH: a checkpoint.h5, an iter_NNNNNNN directory or a --save directory");
  // Checked here so that the message names inspect's argument, not --load.
  MT_CHECK(std::filesystem::exists(o.path), "inspect {}: no such file or directory", o.path);
  // In a save directory, the checkpoint --load would resume from; any it
  // passed over (unfinished or unreadable) is reported.
  std::vector<std::string> warnings;
  const std::string path = resolve_checkpoint(o.path, &warnings);
  for (const std::string& w : warnings) fmt::print(stderr, "moetrain inspect: warning: {}\n", w);
  const H5File f = H5File::open(path, MPI_COMM_SELF);

  nlohmann::json attributes = nlohmann::json::object();
  for (const std::string& name : f.attr_names()) attributes[name] = read_attribute(f, name);
  std::vector<TensorSummary> tensors;
  collect_tensors(f, "/", tensors);

  const Verification verification = o.verify ? verify_datasets(f) : Verification{};
  // A damaged file is an error: named on stderr, exit status 1.
  auto fail_if_damaged = [&] {
    MT_CHECK(verification.damaged.empty(), "inspect --verify: {} is damaged: {}", path,
             fmt::join(verification.damaged, "; "));
  };
  if (!o.json) {
    print_text(path, attributes, tensors);
    if (o.verify) print_verification(verification);
    std::fflush(stdout);
    fail_if_damaged();
    return;
  }
  nlohmann::json list = nlohmann::json::array();
  uint64_t parameters = 0;
  for (const TensorSummary& t : tensors) {
    list.push_back({{"name", t.name}, {"shape", t.shape}, {"dtype", t.dtype}, {"norm", t.norm}});
    if (t.name.rfind("model/", 0) == 0) parameters += H5File::num_elements(t.shape);
  }
  nlohmann::json out{{"path", path}, {"attributes", attributes}, {"tensors", list}, {"parameters", parameters}};
  if (o.verify)
    out["verify"] = {{"checked", verification.checked},
                     {"damaged", verification.damaged},
                     {"unchecked", verification.unchecked}};
  fmt::print("{}\n", out.dump(2, ' ', false, nlohmann::json::error_handler_t::replace));
  std::fflush(stdout);
  fail_if_damaged();
}

}  // namespace mt
