// What the fuzz targets share: scratch files in memory (/dev/shm) named by
// the process, so parallel fuzzing jobs never meet.
#pragma once

#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <fstream>
#include <string>

namespace mt::fuzz {

inline std::string scratch_path(const std::string& name) {
  return "/dev/shm/moetrain_fuzz_" + std::to_string(::getpid()) + "_" + name;
}

inline void write_file(const std::string& path, const void* data, size_t bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(static_cast<const char*>(data), std::streamsize(bytes));
}

}  // namespace mt::fuzz
