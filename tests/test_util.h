// Test helpers shared by the suites: a fresh temporary directory (mkdtemp), files
// written and read as raw bytes, and a check that an mt::Error names a string.
#pragma once

#include <gtest/gtest.h>
#include <hdf5.h>
#include <stdlib.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "runtime/check.h"

namespace mt::test_util {

// Threads a test process (and each rank of a `moetrain` it starts) uses:
// MT_TEST_THREADS, default 1, as ctest runs tests side by side.
// scripts/test_blas_kernels.sh runs the numerical tests at 1 and 2.
inline int test_threads() {
  const char* v = std::getenv("MT_TEST_THREADS");
  return v && std::atoi(v) > 0 ? std::atoi(v) : 1;
}

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/mt_test_XXXXXX";
    char* p = ::mkdtemp(tmpl);
    if (!p) throw std::runtime_error("mkdtemp failed");
    path_ = p;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// Whether `text` (a command's output) contains `part`.
inline bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

inline std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

inline void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
}

inline void write_text(const std::string& path, const std::string& text) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f << text;
}

// Flips one bit of the byte at `fraction` of the way through dataset `name`'s
// stored bytes in the HDF5 file `path` (contiguous layout, as H5File writes),
// as a disk's silent error would; the file's structure stays readable.
inline void flip_stored_byte(const std::string& path, const std::string& name, double fraction = 0.5) {
  const hid_t file = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  ASSERT_GE(file, 0) << path;
  const hid_t dset = H5Dopen2(file, name.c_str(), H5P_DEFAULT);
  ASSERT_GE(dset, 0) << name << " in " << path;
  const haddr_t offset = H5Dget_offset(dset);
  const hsize_t bytes = H5Dget_storage_size(dset);
  H5Dclose(dset);
  H5Fclose(file);
  ASSERT_NE(offset, HADDR_UNDEF) << name << " is not stored contiguously in " << path;
  ASSERT_GT(bytes, 0u);
  const auto at = std::streamoff(offset + hsize_t(fraction * double(bytes - 1)));
  std::fstream f(path, std::ios::binary | std::ios::in | std::ios::out);
  f.seekg(at);
  const char c = char(f.get());
  f.seekp(at);
  f.put(char(c ^ 0x10));
  ASSERT_TRUE(f.good()) << "flipping byte " << at << " of " << path;
}

// Runs fn, expecting an mt::Error whose message contains every one of `parts`.
template <class F>
void expect_error(F&& fn, const std::vector<std::string>& parts) {
  try {
    fn();
    ADD_FAILURE() << "expected mt::Error containing \"" << parts.front() << "\"";
  } catch (const mt::Error& e) {
    const std::string msg = e.what();
    for (const std::string& part : parts)
      EXPECT_NE(msg.find(part), std::string::npos) << "message \"" << msg << "\" lacks \"" << part << "\"";
  }
}

}  // namespace mt::test_util
