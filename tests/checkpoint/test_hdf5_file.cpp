// H5File: parallel HDF5 round trips, groups, attributes and errors. The same
// tests run on one rank and under mpirun; with several ranks each writes its
// own rows of every tensor, as a checkpoint does.
#include "checkpoint/hdf5_file.h"

#include <gtest/gtest.h>
#include <hdf5.h>
#include <mpi.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "test_util.h"

namespace mt {
namespace {

int world_rank() {
  int r = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  return r;
}

int world_size() {
  int n = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &n);
  return n;
}

// A fresh directory under /tmp made by rank 0, its path broadcast so that all
// ranks use the same files; removed after the test.
class H5TempDir : public ::testing::Test {
 protected:
  void SetUp() override {
    char buf[256] = {0};
    if (world_rank() == 0) {
      char tmpl[] = "/tmp/mt_h5_test_XXXXXX";
      ASSERT_NE(mkdtemp(tmpl), nullptr);
      std::snprintf(buf, sizeof buf, "%s", tmpl);
    }
    MPI_Bcast(buf, sizeof buf, MPI_CHAR, 0, MPI_COMM_WORLD);
    dir_ = buf;
  }
  void TearDown() override {
    MPI_Barrier(MPI_COMM_WORLD);
    if (world_rank() == 0) std::filesystem::remove_all(dir_);
  }
  std::string file(const std::string& name) const { return dir_ + "/" + name; }

  std::string dir_;
};

// This rank's rows [begin, end) of n, split as evenly as possible; some ranks
// get none when n is smaller than the world.
std::pair<uint64_t, uint64_t> my_rows(uint64_t n) {
  uint64_t r = uint64_t(world_rank()), p = uint64_t(world_size());
  return {r * n / p, (r + 1) * n / p};
}

// Writes the full row-major tensor `full` of `shape`, each rank its rows.
template <class T>
void write_rows(H5File& f, const std::string& name, const std::vector<uint64_t>& shape,
                const std::vector<T>& full) {
  auto [begin, end] = my_rows(shape[0]);
  uint64_t row = H5File::num_elements(shape) / std::max<uint64_t>(shape[0], 1);
  std::vector<uint64_t> offset(shape.size(), 0), count = shape;
  offset[0] = begin;
  count[0] = end - begin;
  f.write<T>(name, shape, offset, count, full.data() + begin * row);
}

template <class T>
std::vector<T> values(uint64_t n, int salt) {
  std::vector<T> v(n);
  for (uint64_t i = 0; i < n; ++i) {
    if constexpr (std::is_same_v<T, int64_t>)
      v[i] = int64_t(i) * 1000000007LL * 1000 - 5000000000LL + salt;  // needs 64 bits
    else if constexpr (std::is_same_v<T, int32_t>)
      v[i] = int32_t(i) * 7 - 100 + salt;
    else
      v[i] = T(i) * T(0.25) - T(3) + T(salt);  // exact in float
  }
  return v;
}

// --- round trips ------------------------------------------------------------

template <class T>
class H5RoundTrip : public H5TempDir {};
using ElementTypes = ::testing::Types<float, double, int32_t, int64_t>;
TYPED_TEST_SUITE(H5RoundTrip, ElementTypes);

TYPED_TEST(H5RoundTrip, RowBlocksOfEachRank) {
  using T = TypeParam;
  const std::vector<std::vector<uint64_t>> shapes = {{7}, {5, 3}, {4, 3, 2}, {1, 4}, {0, 3}};
  const std::string path = this->file("rt.h5");
  {
    H5File f = H5File::create(path, MPI_COMM_WORLD);
    EXPECT_EQ(f.path(), path);
    EXPECT_TRUE(f.writable());
    for (size_t s = 0; s < shapes.size(); ++s)
      write_rows(f, fmt::format("t{}", s), shapes[s],
                 values<T>(H5File::num_elements(shapes[s]), int(s)));
    f.close();
    EXPECT_FALSE(f.is_open());
    f.close();  // closing twice is harmless
  }
  H5File f = H5File::open(path, MPI_COMM_WORLD);
  EXPECT_FALSE(f.writable());
  const char* expect_dtype = std::is_same_v<T, float>     ? "float32"
                             : std::is_same_v<T, double>  ? "float64"
                             : std::is_same_v<T, int32_t> ? "int32"
                                                          : "int64";
  for (size_t s = 0; s < shapes.size(); ++s) {
    const std::string name = fmt::format("t{}", s);
    EXPECT_EQ(f.shape(name), shapes[s]) << name;
    EXPECT_EQ(f.dtype_name(name), expect_dtype) << name;
    EXPECT_EQ(f.read_all<T>(name), values<T>(H5File::num_elements(shapes[s]), int(s))) << name;
  }

  // Blocks that cut across the ranks' rows.
  const std::vector<T> m = values<T>(15, 1);  // t1: [5, 3]
  std::vector<T> block(4);
  f.read<T>("t1", {1, 1}, {2, 2}, block.data());
  EXPECT_EQ(block, (std::vector<T>{m[4], m[5], m[7], m[8]}));
  const std::vector<T> c = values<T>(24, 2);  // t2: [4, 3, 2]
  std::vector<T> cube(8);
  f.read<T>("t2", {1, 1, 0}, {2, 2, 2}, cube.data());
  EXPECT_EQ(cube, (std::vector<T>{c[8], c[9], c[10], c[11], c[14], c[15], c[16], c[17]}));
  // An empty block reads nothing and is not an error.
  f.read<T>("t1", {5, 0}, {0, 3}, static_cast<T*>(nullptr));
}

TYPED_TEST(H5RoundTrip, WriteAllFromEveryRank) {
  using T = TypeParam;
  const std::string path = this->file("all.h5");
  {
    H5File f = H5File::create(path, MPI_COMM_WORLD);
    f.write_all<T>("whole/x", {3, 4}, values<T>(12, 3));
    f.write_all<T>("scalar", {}, values<T>(1, 9).data());
    f.close();
  }
  H5File f = H5File::open(path, MPI_COMM_WORLD);
  EXPECT_EQ(f.read_all<T>("whole/x"), values<T>(12, 3));
  EXPECT_EQ(f.shape("scalar"), std::vector<uint64_t>{});
  EXPECT_EQ(f.read_all<T>("scalar"), values<T>(1, 9));
}

// --- checksums ------------------------------------------------------------------

using H5Checksums = H5TempDir;

// Writes t: [rows, 5] float, each rank its rows, and whole/x: [3, 4] int64
// from every rank; returns the values of t.
std::vector<float> write_checksummed(const std::string& path, uint64_t rows) {
  H5File f = H5File::create(path, MPI_COMM_WORLD);
  const std::vector<float> t = values<float>(rows * 5, 4);
  write_rows(f, "t", {rows, 5}, t);
  f.write_all<int64_t>("whole/x", {3, 4}, values<int64_t>(12, 5));
  f.close();
  return t;
}

TEST_F(H5Checksums, EveryWrittenBlockIsRecordedAndAnIntactFileVerifies) {
  const uint64_t rows = 9;
  const std::vector<float> t = write_checksummed(file("ok.h5"), rows);
  H5File f = H5File::open(file("ok.h5"), MPI_COMM_WORLD);
  EXPECT_TRUE(f.has_checksums("t"));
  EXPECT_TRUE(f.has_checksums("whole/x"));
  EXPECT_EQ(f.datasets(), (std::vector<std::string>{H5File::kChecksumTable, "t", "whole/x"}));
  // A row of the table for each rank that wrote rows of t, and one for x.
  const uint64_t writers = std::min<uint64_t>(rows, uint64_t(world_size()));
  EXPECT_EQ(f.shape(H5File::kChecksumTable), (std::vector<uint64_t>{writers + 1, 10}));
  EXPECT_TRUE(f.damaged_blocks("t").empty());
  EXPECT_EQ(f.read_all<float>("t"), t);
  EXPECT_NO_THROW(f.verify_unread_blocks());
}

TEST_F(H5Checksums, AFlippedByteIsNamedWhetherReadOrNot) {
  const uint64_t rows = 9;
  const std::string path = file("bad.h5");
  write_checksummed(path, rows);
  // Damage the last rank's rows of t (its block, as write_rows splits them).
  const uint64_t ranks = uint64_t(world_size()), begin = (ranks - 1) * rows / ranks, end = rows;
  if (world_rank() == 0) test_util::flip_stored_byte(path, "t", 0.99);
  MPI_Barrier(MPI_COMM_WORLD);
  const std::string block = fmt::format("block [{}:{}, 0:5]", begin, end);

  {  // found by verify_unread_blocks, on every rank, with nothing read
    H5File f = H5File::open(path, MPI_COMM_WORLD);
    EXPECT_EQ(f.damaged_blocks("t"), std::vector<std::string>{block});
    EXPECT_TRUE(f.damaged_blocks("whole/x").empty());
    EXPECT_TRUE(f.damaged_blocks(H5File::kChecksumTable).empty());
    EXPECT_NO_THROW(f.verify_unread_blocks("whole/"));  // only what lies under "whole/"
    test_util::expect_error([&] { f.verify_unread_blocks(); },
                            {path + " is damaged: one block does not match its checksum: 't' " + block});
  }
  {  // found by a read of the whole tensor (rank 0 reads; the others read nothing)
    H5File f = H5File::open(path, MPI_COMM_WORLD);
    if (world_rank() == 0) {
      std::vector<float> all = f.read_all<float>("t");
      EXPECT_NE(all, values<float>(rows * 5, 4));  // HDF5 itself does not notice
    }
    test_util::expect_error([&] { f.verify_unread_blocks(); }, {block});
  }
  {  // a read of part of a block checks nothing; the verify still does
    H5File f = H5File::open(path, MPI_COMM_WORLD);
    std::vector<float> one(5);
    f.read<float>("t", {rows - 1, 0}, {1, 5}, one.data());
    test_util::expect_error([&] { f.verify_unread_blocks(); }, {block});
  }
}

TEST_F(H5Checksums, ADamagedTableIsReportedAsDamage) {
  const std::string path = file("table.h5");
  write_checksummed(path, 4);
  if (world_rank() == 0) test_util::flip_stored_byte(path, H5File::kChecksumTable, 0.0);  // row 0's dataset number
  MPI_Barrier(MPI_COMM_WORLD);
  H5File f = H5File::open(path, MPI_COMM_WORLD);
  EXPECT_FALSE(f.has_checksums("t"));
  ASSERT_EQ(f.damaged_blocks(H5File::kChecksumTable).size(), 1u);
  EXPECT_NE(f.damaged_blocks(H5File::kChecksumTable)[0].find("row 0 names no dataset"), std::string::npos);
  test_util::expect_error([&] { f.verify_unread_blocks(); }, {"the 'checksums' table", "row 0"});
}

TEST_F(H5Checksums, FilesWithoutATableReadUnchecked) {
  // Written by another tool (the serial HDF5 C API): nothing to check.
  const std::string path = file("plain.h5");
  if (world_rank() == 0) {
    const hid_t f = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    const hsize_t dims[1] = {3};
    const hid_t space = H5Screate_simple(1, dims, nullptr);
    const hid_t d = H5Dcreate2(f, "v", H5T_NATIVE_FLOAT, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    const float v[3] = {1, 2, 3};
    H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, v);
    H5Dclose(d);
    H5Sclose(space);
    H5Fclose(f);
  }
  MPI_Barrier(MPI_COMM_WORLD);
  H5File f = H5File::open(path, MPI_COMM_WORLD);
  EXPECT_FALSE(f.has_checksums("v"));
  EXPECT_EQ(f.read_all<float>("v"), (std::vector<float>{1, 2, 3}));
  EXPECT_NO_THROW(f.verify_unread_blocks());
}

// --- groups ---------------------------------------------------------------------

using H5Groups = H5TempDir;

TEST_F(H5Groups, NestedCreationListAndExists) {
  const std::string path = file("groups.h5");
  {
    H5File f = H5File::create(path, MPI_COMM_WORLD);
    std::vector<float> w = values<float>(6, 0);
    for (const char* name : {"model/layers/0/wq", "model/layers/1/wq", "model/layers/10/wq",
                             "model/layers/0/experts/w1", "/model/embed"})
      write_rows(f, name, {2, 3}, w);
    // A dataset written again with the same shape and type is reopened.
    write_rows(f, "model/embed", {2, 3}, values<float>(6, 5));
    EXPECT_THROW(write_rows(f, "model/embed", {3, 2}, w), Error);
    EXPECT_THROW(write_rows(f, "model/embed", {2, 3}, values<double>(6, 0)), Error);
    f.close();
  }
  H5File f = H5File::open(path, MPI_COMM_WORLD);
  EXPECT_EQ(f.list("/"), (std::vector<std::string>{H5File::kChecksumTable, "model"}));
  EXPECT_NO_THROW(f.verify_unread_blocks());  // the rewritten embed: its last write's checksum
  EXPECT_EQ(f.list("model"), (std::vector<std::string>{"embed", "layers"}));
  EXPECT_EQ(f.list("/model/layers"), (std::vector<std::string>{"0", "1", "10"}));
  EXPECT_EQ(f.list("model/layers/0"), (std::vector<std::string>{"experts", "wq"}));
  EXPECT_EQ(f.read_all<float>("model/embed"), values<float>(6, 5));
  EXPECT_EQ(f.read_all<float>("model/layers/0/experts/w1"), values<float>(6, 0));

  EXPECT_TRUE(f.exists("/"));
  EXPECT_TRUE(f.exists("model"));
  EXPECT_TRUE(f.exists("model/layers/10/wq"));
  EXPECT_TRUE(f.exists("/model/layers/10/wq"));
  EXPECT_FALSE(f.exists("model/layers/2/wq"));  // parent missing
  EXPECT_FALSE(f.exists("nothing/at/all"));
  EXPECT_FALSE(f.exists("model/embed/x"));  // parent is a dataset
  EXPECT_THROW(f.list("model/embed"), Error);
  EXPECT_THROW(f.list("model/nothing"), Error);
}

// --- attributes -------------------------------------------------------------------

using H5Attrs = H5TempDir;

TEST_F(H5Attrs, EachTypeRoundTrips) {
  const std::string path = file("attrs.h5");
  // Longer than HDF5's 64 KiB limit on a compact attribute: a config as JSON.
  std::string big = "{\"config\": \"";
  while (big.size() < 100000) big += "abcdefghij";
  big += "\"}";
  const std::string utf8 = "layout tp=2 pp=3 \xc3\xa9\xe2\x9c\x93";
  {
    H5File f = H5File::create(path, MPI_COMM_WORLD);
    write_rows(f, "model/embed", {2, 3}, values<float>(6, 0));
    f.set_attr("iteration", int64_t{1234567890123});
    f.set_attr("seed", 42);  // int goes in as int64
    f.set_attr("negative", int64_t{-7});
    f.set_attr("lr", 3.0e-4);
    f.set_attr("name", "moetrain");
    f.set_attr("empty", std::string());
    f.set_attr("config", big);
    f.set_attr("layout", utf8);
    f.set_attr("seed", 43);  // replaced
    f.set_attr("rows", 2, "model/embed");
    f.set_attr("kind", "embedding", "/model/embed");
    f.set_attr("scale", 0.5, "model");
    EXPECT_THROW(f.set_attr("x", 1, "model/missing"), Error);
    f.close();
  }
  H5File f = H5File::open(path, MPI_COMM_WORLD);
  EXPECT_EQ(f.attr_int("iteration"), 1234567890123);
  EXPECT_EQ(f.attr_int("seed"), 43);
  EXPECT_EQ(f.attr_int("negative"), -7);
  EXPECT_EQ(f.attr_double("lr"), 3.0e-4);
  EXPECT_EQ(f.attr_double("seed"), 43.0);  // an integer reads as a double too
  EXPECT_EQ(f.attr_string("name"), "moetrain");
  EXPECT_EQ(f.attr_string("empty"), "");
  EXPECT_EQ(f.attr_string("config"), big);
  EXPECT_EQ(f.attr_string("layout"), utf8);
  EXPECT_EQ(f.attr_int("rows", "model/embed"), 2);
  EXPECT_EQ(f.attr_string("kind", "model/embed"), "embedding");
  EXPECT_EQ(f.attr_double("scale", "/model"), 0.5);
  EXPECT_EQ(f.attr_names(), (std::vector<std::string>{"config", "empty", "iteration", "layout", "lr",
                                                      "name", "negative", "seed"}));
  EXPECT_EQ(f.attr_names("model/embed"), (std::vector<std::string>{"kind", "rows"}));
  EXPECT_EQ(f.attr_kind("seed"), H5File::AttrKind::Integer);
  EXPECT_EQ(f.attr_kind("lr"), H5File::AttrKind::Float);
  EXPECT_EQ(f.attr_kind("config"), H5File::AttrKind::String);
  EXPECT_EQ(f.attr_kind("kind", "model/embed"), H5File::AttrKind::String);
  EXPECT_TRUE(f.is_dataset("model/embed"));
  EXPECT_FALSE(f.is_dataset("model"));
  EXPECT_FALSE(f.is_dataset("no/such/object"));
  EXPECT_TRUE(f.has_attr("lr"));
  EXPECT_TRUE(f.has_attr("kind", "model/embed"));
  EXPECT_FALSE(f.has_attr("kind"));
  EXPECT_FALSE(f.has_attr("kind", "no/such/object"));

  // Wrong types give errors that name the attribute.
  for (auto call : {+[](const H5File& h) { h.attr_int("name"); },
                    +[](const H5File& h) { h.attr_int("lr"); },
                    +[](const H5File& h) { h.attr_double("name"); },
                    +[](const H5File& h) { (void)h.attr_string("seed"); }}) {
    try {
      call(f);
      ADD_FAILURE() << "no error for an attribute of the wrong type";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("not"), std::string::npos) << e.what();
    }
  }
}

// --- conversion ---------------------------------------------------------------------

using H5Convert = H5TempDir;

TEST_F(H5Convert, Float64ReadAsFloatAndIntAsDouble) {
  const std::string path = file("conv.h5");
  std::vector<double> d(10);
  for (size_t i = 0; i < d.size(); ++i) d[i] = 0.1 * double(i) - 0.35;
  {
    H5File f = H5File::create(path, MPI_COMM_WORLD);
    write_rows(f, "d", {5, 2}, d);
    write_rows(f, "i", {4}, std::vector<int32_t>{-2, 0, 3, 100000});
    f.close();
  }
  H5File f = H5File::open(path, MPI_COMM_WORLD);
  EXPECT_EQ(f.dtype_name("d"), "float64");
  std::vector<float> got = f.read_all<float>("d");
  ASSERT_EQ(got.size(), d.size());
  for (size_t i = 0; i < d.size(); ++i) EXPECT_EQ(got[i], float(d[i])) << i;
  std::vector<float> row(2);
  f.read<float>("d", {3, 0}, {1, 2}, row.data());
  EXPECT_EQ(row, (std::vector<float>{float(d[6]), float(d[7])}));
  EXPECT_EQ(f.read_all<double>("i"), (std::vector<double>{-2, 0, 3, 100000}));
}

// --- errors -------------------------------------------------------------------------

using H5Errors = H5TempDir;

// Runs `call`, expecting an mt::Error whose message holds every one of `parts`.
template <class F>
void expect_error(F&& call, const std::vector<std::string>& parts) {
  try {
    call();
    ADD_FAILURE() << "no error; expected one naming " << parts[0];
  } catch (const Error& e) {
    for (const std::string& p : parts)
      EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what();
  }
}

TEST_F(H5Errors, OpenMissingFile) {
  const std::string path = file("missing.h5");
  expect_error([&] { H5File::open(path, MPI_COMM_WORLD); }, {path, "no such file"});
}

TEST_F(H5Errors, OpenGarbageAndTruncatedFiles) {
  const std::string garbage = file("garbage.h5"), cut = file("cut.h5");
  if (world_rank() == 0) {
    std::ofstream out(garbage, std::ios::binary);
    for (int i = 0; i < 4096; ++i) out.put(char((i * 37 + 11) & 0xff));
  }
  {
    H5File f = H5File::create(cut, MPI_COMM_WORLD);
    write_rows(f, "x", {64, 64}, values<float>(64 * 64, 0));
    f.close();
  }
  MPI_Barrier(MPI_COMM_WORLD);
  if (world_rank() == 0)
    std::filesystem::resize_file(cut, std::filesystem::file_size(cut) / 2);
  MPI_Barrier(MPI_COMM_WORLD);
  // HDF5's own innermost cause is appended to the message.
  expect_error([&] { H5File::open(garbage, MPI_COMM_WORLD); },
               {garbage, "not an HDF5 file", "(HDF5: file signature not found"});
  expect_error([&] { H5File::open(cut, MPI_COMM_WORLD); }, {cut, "truncated", "(HDF5: "});
  expect_error([&] { H5File::create(file("no/such/dir/x.h5"), MPI_COMM_WORLD); },
               {"no/such/dir/x.h5"});
}

TEST_F(H5Errors, ReadsOfMissingOrOutOfRangeData) {
  const std::string path = file("err.h5");
  {
    H5File f = H5File::create(path, MPI_COMM_WORLD);
    write_rows(f, "model/embed", {4, 3}, values<float>(12, 0));
    f.set_attr("iteration", 5);
    // A block outside the shape, or of the wrong rank, is refused before any I/O.
    expect_error([&] { f.write<float>("bad", {4, 3}, {3, 0}, {2, 3}, nullptr); },
                 {"bad", path, "outside"});
    expect_error([&] { f.write<float>("bad", {4, 3}, {0}, {4}, nullptr); }, {"bad", "rank"});
    f.close();
  }
  H5File f = H5File::open(path, MPI_COMM_WORLD);
  std::vector<float> buf(12);
  expect_error([&] { f.read_all<float>("model/unembed"); }, {"model/unembed", path});
  expect_error([&] { f.read<float>("model/embed", {3, 0}, {2, 3}, buf.data()); },
               {"model/embed", path, "outside"});
  expect_error([&] { f.read<float>("model/embed", {0, 1}, {1, 3}, buf.data()); },
               {"model/embed", "outside"});
  expect_error([&] { f.read<float>("model/embed", {0}, {4}, buf.data()); }, {"model/embed", "rank"});
  expect_error([&] { f.read_all<float>("model"); }, {"model", "not a dataset"});
  expect_error([&] { f.shape("nothing"); }, {"nothing", path});
  expect_error([&] { f.attr_int("step"); }, {"step", path});
  expect_error([&] { f.attr_string("kind", "model/embed"); }, {"kind", "model/embed"});
  expect_error([&] { f.attr_int("kind", "model/nothing"); }, {"model/nothing"});
  // A file opened for reading refuses writes.
  expect_error([&] { f.set_attr("x", 1); }, {"read-only", path});

  // Using a closed (or moved-from) file is an error, not a crash.
  H5File g = std::move(f);
  EXPECT_FALSE(f.is_open());
  EXPECT_TRUE(g.is_open());
  expect_error([&] { f.exists("model"); }, {"not open"});
  g.close();
  expect_error([&] { g.read_all<float>("model/embed"); }, {"not open"});
}

// --- external tools ------------------------------------------------------------------

using H5Tools = H5TempDir;

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

TEST_F(H5Tools, H5dumpAndH5pyReadTheFile) {
  const std::string path = file("tools.h5");
  {
    H5File f = H5File::create(path, MPI_COMM_WORLD);
    write_rows(f, "model/layers/0/wq", {5, 3}, values<float>(15, 0));
    f.set_attr("iteration", 12);
    f.set_attr("config", "{\"d\": 8}");
    f.set_attr("lr", 0.25);
    f.close();
  }
  if (world_rank() != 0) return;  // one rank runs the tools

  const std::string out = file("h5dump.txt");
  if (std::system(("h5dump -H " + path + " > " + out + " 2>&1").c_str()) != 0)
    GTEST_SKIP() << "h5dump failed or is not installed: " << slurp(out);
  const std::string dump = slurp(out);
  EXPECT_NE(dump.find("DATASET \"wq\""), std::string::npos) << dump;
  EXPECT_NE(dump.find("H5T_IEEE_F32LE"), std::string::npos) << dump;
  EXPECT_NE(dump.find("( 5, 3 )"), std::string::npos) << dump;
  EXPECT_NE(dump.find("ATTRIBUTE \"config\""), std::string::npos) << dump;
  EXPECT_NE(dump.find("H5T_CSET_UTF8"), std::string::npos) << dump;

  // h5py, when present, must see the string attribute as str.
  if (std::system("python3 -c 'import h5py' > /dev/null 2>&1") != 0) return;
  const std::string script = file("check.py");
  std::ofstream(script) << "import sys, h5py\n"
                           "f = h5py.File(sys.argv[1], 'r')\n"
                           "assert isinstance(f.attrs['config'], str), type(f.attrs['config'])\n"
                           "assert f.attrs['config'] == '{\"d\": 8}'\n"
                           "assert int(f.attrs['iteration']) == 12 and float(f.attrs['lr']) == 0.25\n"
                           "w = f['model/layers/0/wq'][()]\n"
                           "assert w.shape == (5, 3) and str(w.dtype) == 'float32'\n"
                           "assert float(w[4, 2]) == 14 * 0.25 - 3\n";
  EXPECT_EQ(std::system(("python3 " + script + " " + path).c_str()), 0);
}

}  // namespace
}  // namespace mt
