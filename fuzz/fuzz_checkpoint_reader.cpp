// libFuzzer target: what moetrain reads from a checkpoint besides the
// tensors' values (checkpoint/checkpoint_file.h, training/step_guard.h,
// `moetrain inspect`): the root attributes, the JSON inside them and the
// tensors' shapes. The HDF5 container itself is HDF5's to fuzz; here every
// input becomes a well-formed HDF5 file holding fuzzed contents.
//
// Input: fields separated by 0x1E, each absent from the file when the input
// ends before it: config (JSON text), skip_guard (JSON text), then
// format_version, iteration, consumed_samples, consumed_tokens, adam_step
// and seed (an integer attribute when the field is an integer, else a
// string one), then the shape of model/embed ("64,32").
// A checkpoint either reads or fails with mt::Error naming the file;
// anything else (another exception, a sanitizer report) is a bug.
#include <mpi.h>
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "checkpoint/checkpoint_file.h"
#include "fuzz_files.h"
#include "launch/commands.h"
#include "training/step_guard.h"
#include "runtime/check.h"
#include "checkpoint/hdf5_file.h"

namespace {

std::vector<std::string> split_fields(const uint8_t* data, size_t size) {
  std::vector<std::string> fields(1);
  for (size_t i = 0; i < size; ++i)
    if (data[i] == 0x1E) fields.emplace_back();
    else fields.back() += char(data[i]);
  return fields;
}

bool parse_int(const std::string& s, int64_t* out) {
  if (s.empty()) return false;
  char* end = nullptr;
  errno = 0;
  *out = std::strtoll(s.c_str(), &end, 10);
  return errno == 0 && *end == '\0';
}

// Up to 3 dimensions of at most 4096 elements in all.
std::vector<uint64_t> parse_shape(const std::string& s) {
  std::vector<uint64_t> shape;
  uint64_t elements = 1;
  for (size_t at = 0; at <= s.size() && shape.size() < 3;) {
    const size_t comma = std::min(s.find(',', at), s.size());
    int64_t d = 0;
    if (!parse_int(s.substr(at, comma - at), &d) || d < 0 || d > 4096 || elements * uint64_t(d) > 4096) break;
    shape.push_back(uint64_t(d));
    elements *= uint64_t(d);
    at = comma + 1;
  }
  return shape;
}

void write_checkpoint(const std::string& path, const std::vector<std::string>& fields) {
  mt::H5File f = mt::H5File::create(path, MPI_COMM_SELF);
  static const char* kNames[] = {"config",          "skip_guard", "format_version", "iteration",
                                 "consumed_samples", "consumed_tokens", "adam_step", "seed"};
  for (size_t i = 0; i < std::size(kNames) && i < fields.size(); ++i) {
    int64_t v = 0;
    if (i >= 2 && parse_int(fields[i], &v)) f.set_attr(kNames[i], v);
    else f.set_attr(kNames[i], fields[i]);
  }
  const std::vector<uint64_t> shape = fields.size() > 8 ? parse_shape(fields[8]) : std::vector<uint64_t>{4, 4};
  const std::vector<float> values(mt::H5File::num_elements(shape), 0.5f);
  for (const char* name : {"model/embed", "optim/exp_avg_sq/lm_head"}) f.write_all(name, shape, values.data());
  f.close();
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) {
  MPI_Init(argc, argv);
  // inspect prints its tables; a million of them help no one.
  if (!std::getenv("MT_FUZZ_VERBOSE")) dup2(::open("/dev/null", O_WRONLY), STDOUT_FILENO);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = mt::fuzz::scratch_path("checkpoint.h5");
  write_checkpoint(path, split_fields(data, size));
  (void)mt::checkpoint_problem(path);  // never throws
  try {
    const mt::CheckpointInfo info = mt::read_checkpoint_info(path, MPI_COMM_SELF);
    mt::StepGuard guard(mt::SkipConfig{}, "", false);
    if (info.skip_guard.is_object()) guard.restore(info.skip_guard);
  } catch (const mt::Error&) {
  }
  for (bool json : {false, true}) {
    try {
      mt::run_inspect(mt::InspectOptions{path, json});
    } catch (const mt::Error&) {
    }
  }
  return 0;
}
