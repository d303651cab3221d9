// H5File: a thin, move-only wrapper over parallel HDF5 (the MPI-IO driver),
// used for checkpoints (docs/design.md section 6) and test fixtures.
//
// Every rank of the communicator opens the file; each tensor is stored whole
// in its logical shape and every rank writes its own block of it in one
// collective call. Reads are independent: any rank may read any block.
//
// Collective calls (every rank of comm must make them, in the same order and
// with the same arguments apart from the block and the data):
//   create, open, close (and the destructor), flush, write, write_all,
//   set_attr. For set_attr every rank must pass the same value: HDF5 keeps
//   attributes in metadata that each rank caches, so differing values would
//   leave the file inconsistent.
// Independent calls: read, read_all, shape, exists, list, dtype_name,
//   has_attr, attr_int, attr_double, attr_string, attr_names.
//
// Data that other ranks wrote is safe to read after close() and a new open()
// (or after flush()); MPI-IO does not promise it earlier.
//
// Checksums: every block a rank writes is hashed (XXH3-64 by 1 MiB chunks,
// checkpoint/block_checksum.h), and close() stores every rank's hashes in the
// dataset "checksums" (uint64 [blocks, 10], a row a block: the dataset's
// number in its attribute "datasets", the offset and count padded to 4
// dimensions, the hash; a block a rank writes again replaces its earlier
// hash). A read checks, from memory, each recorded block
// that lies inside what it read (when read as the stored type);
// verify_unread_blocks() checks the rest and reports the damage. Files
// without the table (other writers) read as before, unchecked.
#pragma once

#include <mpi.h>

#include <concepts>
#include <memory>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "checkpoint/block_checksum.h"
#include "runtime/check.h"

namespace mt {

// A file whose stored bytes no longer match their checksums.
struct DamagedFile : Error {
  using Error::Error;
};

// The element types a dataset may hold in memory; each maps to the native
// HDF5 type of the same width (the file type equals the memory type).
// (uint8: raw bytes, such as the tokenizer's files.)
template <class T>
concept H5Element = std::same_as<T, float> || std::same_as<T, double> ||
                    std::same_as<T, int32_t> || std::same_as<T, int64_t> || std::same_as<T, uint8_t>;

enum class H5Type { kFloat32, kFloat64, kInt32, kInt64, kUint8 };

template <H5Element T>
constexpr H5Type h5_type_of() {
  if constexpr (std::same_as<T, float>) return H5Type::kFloat32;
  else if constexpr (std::same_as<T, double>) return H5Type::kFloat64;
  else if constexpr (std::same_as<T, int32_t>) return H5Type::kInt32;
  else if constexpr (std::same_as<T, uint8_t>) return H5Type::kUint8;
  else return H5Type::kInt64;
}

class H5File {
 public:
  H5File() = default;  // not open; only good for assigning to
  H5File(H5File&& other) noexcept;
  H5File& operator=(H5File&& other) noexcept;
  H5File(const H5File&) = delete;
  H5File& operator=(const H5File&) = delete;
  ~H5File();  // closes quietly; call close() to see errors

  // Creates (truncating) the file for writing. Collective over comm.
  static H5File create(const std::string& path, MPI_Comm comm);
  // Opens an existing file read-only. Collective over comm. A missing,
  // non-HDF5 or truncated file gives an mt::Error naming the path.
  static H5File open(const std::string& path, MPI_Comm comm);

  void close();  // collective; a closed file may be closed again
  void flush();  // collective; makes written data visible to other ranks
  bool is_open() const { return file_ >= 0; }
  bool writable() const { return writable_; }
  const std::string& path() const { return path_; }

  // --- datasets ---------------------------------------------------------
  // Collective. Creates the dataset `name` (parent groups as needed, e.g.
  // "model/layers/0/wq") of logical `shape`, or reopens it if it already
  // exists with the same shape and type, and writes this rank's row-major
  // block [offset, offset + count) from `data` in one collective transfer.
  // A rank with nothing to write passes a count with a zero in it. Parts of
  // the dataset that no rank writes are undefined (no fill value is written,
  // which would double the I/O of a checkpoint).
  template <H5Element T>
  void write(const std::string& name, const std::vector<uint64_t>& shape,
             const std::vector<uint64_t>& offset, const std::vector<uint64_t>& count,
             const T* data) {
    write_impl(name, shape, offset, count, h5_type_of<T>(), data, false);
  }
  // Collective. Every rank passes the same whole tensor; rank 0 writes it.
  // An empty shape makes a scalar dataset.
  template <H5Element T>
  void write_all(const std::string& name, const std::vector<uint64_t>& shape, const T* data) {
    write_impl(name, shape, {}, {}, h5_type_of<T>(), data, true);
  }
  template <H5Element T>
  void write_all(const std::string& name, const std::vector<uint64_t>& shape,
                 const std::vector<T>& data) {
    MT_CHECK(data.size() == num_elements(shape),
             "write_all of '{}' to '{}': {} values for a shape of {} elements", name, path_,
             data.size(), num_elements(shape));
    write_all(name, shape, data.data());
  }

  // Reads the block [offset, offset + count) into `data` (row-major, count's
  // shape). The stored type may differ from T (float64 read as float, ...):
  // HDF5 converts. A scalar dataset takes empty offset and count.
  template <H5Element T>
  void read(const std::string& name, const std::vector<uint64_t>& offset,
            const std::vector<uint64_t>& count, T* data) const {
    read_impl(name, offset, count, h5_type_of<T>(), data);
  }
  template <H5Element T>
  std::vector<T> read_all(const std::string& name) const {
    std::vector<uint64_t> dims = shape(name);
    std::vector<T> out(num_elements(dims));
    read_impl(name, std::vector<uint64_t>(dims.size(), 0), dims, h5_type_of<T>(), out.data());
    return out;
  }

  std::vector<uint64_t> shape(const std::string& name) const;  // {} for a scalar
  // Whether a group or dataset exists at `name`; false (no error) when a
  // parent is missing or is not a group. "/" always exists.
  bool exists(const std::string& name) const;
  bool is_dataset(const std::string& name) const;  // exists and is a dataset, not a group
  std::vector<std::string> list(const std::string& group) const;  // child names, sorted
  // "float32", "float64", "int32", "int64"; other types get a short
  // description such as "uint8", "float16" or "string".
  std::string dtype_name(const std::string& name) const;

  // --- attributes (scalar) on the root group or the object at `obj` -------
  // Collective; every rank must pass the same value. Replaces an attribute of
  // the same name. Strings are stored as variable-length UTF-8 (h5py: str).
  void set_attr(const std::string& name, int64_t value, const std::string& obj = "/");
  void set_attr(const std::string& name, double value, const std::string& obj = "/");
  void set_attr(const std::string& name, const std::string& value, const std::string& obj = "/");
  void set_attr(const std::string& name, const char* value, const std::string& obj = "/") {
    set_attr(name, std::string(value), obj);
  }
  // Any other integer (int, uint64_t, ...) is stored as int64.
  template <std::integral I>
    requires(!std::same_as<I, int64_t>)
  void set_attr(const std::string& name, I value, const std::string& obj = "/") {
    MT_CHECK(std::in_range<int64_t>(value), "attribute '{}' on '{}' in '{}': {} does not fit int64",
             name, obj, path_, value);
    set_attr(name, static_cast<int64_t>(value), obj);
  }

  bool has_attr(const std::string& name, const std::string& obj = "/") const;
  int64_t attr_int(const std::string& name, const std::string& obj = "/") const;  // integers only
  double attr_double(const std::string& name, const std::string& obj = "/") const;  // float or integer
  std::string attr_string(const std::string& name, const std::string& obj = "/") const;
  std::vector<std::string> attr_names(const std::string& obj = "/") const;  // sorted
  enum class AttrKind { Integer, Float, String, Other };  // Other: arrays, compounds, ...
  AttrKind attr_kind(const std::string& name, const std::string& obj = "/") const;

  // Every dataset in the file, by full name ("model/layers/0/wq"), sorted.
  std::vector<std::string> datasets() const;

  // --- checksums --------------------------------------------------------
  static constexpr const char* kChecksumTable = "checksums";
  bool has_checksums(const std::string& name) const;
  // Independent: reads every recorded block of dataset `name` and describes
  // each that does not match its checksum ("block [0:32, 0:64]"); empty
  // when all match (or the dataset has no checksums). For kChecksumTable:
  // what is wrong with the table, if it does not read as one.
  std::vector<std::string> damaged_blocks(const std::string& name) const;
  // Collective: checks every recorded block of every dataset (whose name
  // starts with `under`) that no rank's reads have checked, the blocks split
  // over the ranks; then, if a read or this check found damage, throws
  // DamagedFile on every rank naming each damaged block.
  void verify_unread_blocks(const std::string& under = "") const;

  static uint64_t num_elements(const std::vector<uint64_t>& shape);

 private:
  H5File(std::string path, int64_t file, MPI_Comm comm, bool writable);

  void require_open(const char* what) const;
  void close_quietly() noexcept;
  void write_impl(const std::string& name, const std::vector<uint64_t>& shape,
                  const std::vector<uint64_t>& offset, const std::vector<uint64_t>& count,
                  H5Type type, const void* data, bool whole_from_rank0);
  void read_impl(const std::string& name, const std::vector<uint64_t>& offset,
                 const std::vector<uint64_t>& count, H5Type type, void* data) const;
  struct Checksums;  // what this rank wrote and what reads have checked (hdf5_file.cpp)
  Checksums& sums() const;  // loading the file's table at the first use
  void write_checksum_table();  // collective, from close()
  // From read_impl: checks the recorded blocks inside the block `read`.
  void check_read_block(const std::string& name, const ArrayBlock& read, size_t elem_bytes, const void* data) const;
  // The damaged blocks among the recorded ones numbered `which` (nullptr: all).
  std::vector<std::string> damaged_among(const std::string& name, const std::vector<size_t>* which) const;

  std::string path_;
  int64_t file_ = -1;  // the hid_t (int64_t in HDF5 >= 1.10); -1 when closed
  MPI_Comm comm_ = MPI_COMM_NULL;  // a duplicate of the file's communicator
  int rank_ = 0;       // this process's rank in it
  bool writable_ = false;
  mutable std::unique_ptr<Checksums> sums_;
};

}  // namespace mt
