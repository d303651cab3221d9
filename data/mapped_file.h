// A whole file mapped read-only (RAII, move-only). Token stores are read this
// way so that many ranks on one node share the page cache instead of each
// holding a copy.
#pragma once

#include <cstddef>
#include <string>

namespace mt::data {

class MappedFile {
 public:
  MappedFile() = default;
  // Throws naming `path` if it is missing, not a regular file or cannot be mapped.
  explicit MappedFile(const std::string& path);
  ~MappedFile();
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  // nullptr for an empty file (mmap cannot map zero bytes).
  const std::byte* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

  // Ask the kernel to start reading the whole file in (before a full scan).
  void advise_willneed() const;

 private:
  void release() noexcept;

  std::string path_;
  const std::byte* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace mt::data
