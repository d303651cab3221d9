#include "checkpoint/hdf5_file.h"

#include <hdf5.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <numeric>
#include <filesystem>
#include <type_traits>

#include "checkpoint/block_checksum.h"

namespace mt {

// The header keeps hdf5.h out of its users by holding the file's hid_t as int64_t.
static_assert(std::is_same_v<hid_t, int64_t>, "H5File stores hid_t as int64_t (HDF5 >= 1.10)");

namespace {

// Owns one HDF5 identifier and releases it with the matching H5?close.
class Handle {
 public:
  using Closer = herr_t (*)(hid_t);
  Handle(hid_t id, Closer closer) : id_(id), closer_(closer) {}
  Handle(Handle&& other) noexcept : id_(std::exchange(other.id_, -1)), closer_(other.closer_) {}
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  Handle& operator=(Handle&&) = delete;
  ~Handle() {
    if (id_ >= 0) closer_(id_);
  }
  operator hid_t() const { return id_; }

 private:
  hid_t id_;
  Closer closer_;
};

// Our messages replace HDF5's own error stack, which it would otherwise print
// on every failed call (including the ones exists() makes on purpose).
void silence_hdf5_errors() { H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr); }

hid_t native_type(H5Type type) {
  switch (type) {
    case H5Type::kFloat32: return H5T_NATIVE_FLOAT;
    case H5Type::kFloat64: return H5T_NATIVE_DOUBLE;
    case H5Type::kInt32: return H5T_NATIVE_INT32;
    case H5Type::kInt64: return H5T_NATIVE_INT64;
    case H5Type::kUint8: return H5T_NATIVE_UINT8;
  }
  return -1;
}

const char* type_name(H5Type type) {
  switch (type) {
    case H5Type::kFloat32: return "float32";
    case H5Type::kFloat64: return "float64";
    case H5Type::kInt32: return "int32";
    case H5Type::kInt64: return "int64";
    case H5Type::kUint8: return "uint8";
  }
  return "?";
}

std::vector<hsize_t> to_hsize(const std::vector<uint64_t>& v) {
  return std::vector<hsize_t>(v.begin(), v.end());
}

// A short name for a stored datatype, numpy style where there is one.
std::string describe_type(hid_t type) {
  size_t bits = H5Tget_size(type) * 8;
  switch (H5Tget_class(type)) {
    case H5T_FLOAT: return fmt::format("float{}", bits);
    case H5T_INTEGER:
      return fmt::format("{}int{}", H5Tget_sign(type) == H5T_SGN_NONE ? "u" : "", bits);
    case H5T_STRING: return "string";
    case H5T_COMPOUND: return "compound";
    case H5T_ENUM: return "enum";
    case H5T_ARRAY: return "array";
    case H5T_VLEN: return "vlen";
    case H5T_OPAQUE: return "opaque";
    case H5T_BITFIELD: return "bitfield";
    case H5T_REFERENCE: return "reference";
    case H5T_TIME: return "time";
    default: return "unknown";
  }
}

std::string shape_str(const std::vector<uint64_t>& v) { return fmt::format("[{}]", fmt::join(v, ", ")); }

// Selects the row-major block [offset, offset + count) of file_space and
// returns a memory dataspace of the block's shape.
hid_t select_block(hid_t file_space, const std::vector<uint64_t>& offset,
                   const std::vector<uint64_t>& count, const std::string& name,
                   const std::string& path) {
  const std::vector<hsize_t> start = to_hsize(offset), block = to_hsize(count);
  H5_CHECK(H5Sselect_hyperslab(file_space, H5S_SELECT_SET, start.data(), nullptr, block.data(), nullptr),
           "selecting block {} + {} of dataset '{}' in '{}'", shape_str(offset), shape_str(count), name,
           path);
  return H5Screate_simple(int(block.size()), block.data(), nullptr);
}

// Checks that [offset, offset + count) has the dataset's rank and lies inside shape.
void check_block(const std::string& what, const std::string& name, const std::string& path,
                 const std::vector<uint64_t>& shape, const std::vector<uint64_t>& offset,
                 const std::vector<uint64_t>& count) {
  MT_CHECK(offset.size() == shape.size() && count.size() == shape.size(),
           "{} of dataset '{}' in '{}': offset {} and count {} must have the rank of shape {}", what,
           name, path, shape_str(offset), shape_str(count), shape_str(shape));
  for (size_t i = 0; i < shape.size(); ++i) {
    // Written so that offset + count cannot overflow.
    MT_CHECK(count[i] <= shape[i] && offset[i] <= shape[i] - count[i],
             "{} of dataset '{}' in '{}': block at offset {} of size {} is outside shape {}", what,
             name, path, shape_str(offset), shape_str(count), shape_str(shape));
  }
}

herr_t collect_attr_name(hid_t, const char* name, const H5A_info_t*, void* out) {
  static_cast<std::vector<std::string>*>(out)->emplace_back(name);
  return 0;
}

}  // namespace

uint64_t H5File::num_elements(const std::vector<uint64_t>& shape) {
  uint64_t n = 1;
  for (uint64_t d : shape) n *= d;
  return n;
}

// --- life cycle ---------------------------------------------------------------

// --- checksums: the state ------------------------------------------------------

namespace {

// Every rank's elements of `mine` (a vector or string), concatenated in rank
// order, on every rank of comm.
template <typename Container>
Container all_gather_concat(const Container& mine, MPI_Datatype type, MPI_Comm comm) {
  int size = 1;
  MPI_CHECK(MPI_Comm_size(comm, &size));
  std::vector<int> lengths(size_t(size), 0), displs(size_t(size), 0);
  const int length = int(mine.size());
  MPI_CHECK(MPI_Allgather(&length, 1, MPI_INT, lengths.data(), 1, MPI_INT, comm));
  std::exclusive_scan(lengths.begin(), lengths.end(), displs.begin(), 0);
  Container all(size_t(displs.back() + lengths.back()), typename Container::value_type{});
  MPI_CHECK(MPI_Allgatherv(mine.data(), length, type, all.data(), lengths.data(), displs.data(), type, comm));
  return all;
}

// One recorded block and its hash.
struct BlockHash {
  ArrayBlock block;
  uint64_t hash = 0;
};

// The table's rows: dataset number, offset and count padded to kTableRank
// dimensions, hash.
constexpr size_t kTableRank = 4, kTableColumns = 2 + 2 * kTableRank;

// The name a dataset's checksums go by: "/model/embed" and "model/embed"
// are the same dataset.
std::string dataset_key(const std::string& name) { return name.substr(std::min(name.find_first_not_of('/'), name.size())); }

// Adds the row of block b of dataset number `dataset` to this rank's rows,
// dropping the rows of its earlier blocks of that dataset that b overwrites.
void record_block(std::vector<uint64_t>& rows, uint64_t dataset, const ArrayBlock& b, uint64_t hash) {
  const size_t rank = b.offset.size();
  MT_CHECK(rank <= kTableRank, "checksums cover datasets of at most {} dimensions, not {}", kTableRank, rank);
  for (size_t r = rows.size(); r > 0;) {
    r -= kTableColumns;
    const auto row = rows.begin() + ptrdiff_t(r);
    const ArrayBlock earlier{{row + 1, row + 1 + ptrdiff_t(rank)},
                             {row + 1 + kTableRank, row + 1 + kTableRank + ptrdiff_t(rank)}};
    if (rows[r] == dataset && block_contains(b, earlier)) rows.erase(row, row + kTableColumns);
  }
  rows.push_back(dataset);
  for (const std::vector<uint64_t>* v : {&b.offset, &b.count}) {
    rows.insert(rows.end(), v->begin(), v->end());
    rows.insert(rows.end(), kTableRank - v->size(), 0);
  }
  rows.push_back(hash);
}

std::string block_str(const ArrayBlock& b) {
  std::vector<std::string> ranges;
  for (size_t d = 0; d < b.offset.size(); ++d)
    ranges.push_back(fmt::format("{}:{}", b.offset[d], b.offset[d] + b.count[d]));
  return fmt::format("[{}]", fmt::join(ranges, ", "));
}

size_t type_bytes(H5Type type) {
  switch (type) {
    case H5Type::kUint8: return 1;
    case H5Type::kFloat32:
    case H5Type::kInt32: return 4;
    case H5Type::kFloat64:
    case H5Type::kInt64: return 8;
  }
  return 0;
}

// The H5Type a stored dataset type reads as byte for byte, if any.
bool exact_type(hid_t stored, H5Type* out) {
  for (H5Type t : {H5Type::kFloat32, H5Type::kFloat64, H5Type::kInt32, H5Type::kInt64, H5Type::kUint8})
    if (H5Tequal(stored, native_type(t)) > 0) {
      *out = t;
      return true;
    }
  return false;
}

herr_t collect_dataset(hid_t, const char* name, const H5O_info_t* info, void* out) {
  if (info->type == H5O_TYPE_DATASET) static_cast<std::vector<std::string>*>(out)->emplace_back(name);
  return 0;
}

}  // namespace

struct H5File::Checksums {
  // Writing: the datasets in the order first written (the same on every
  // rank, writes being collective) and this rank's rows of the table.
  std::vector<std::string> names;
  std::map<std::string, uint64_t> number;
  std::vector<uint64_t> rows;
  // Reading: the file's table, per dataset (or what is wrong with it);
  // which blocks reads have checked; the damage they found.
  bool loaded = false;
  std::map<std::string, std::vector<BlockHash>> recorded;
  std::string table_problem;
  std::map<std::string, std::vector<char>> checked;
  std::vector<std::string> damaged;
};

// --- life cycle ---------------------------------------------------------------

H5File::H5File(std::string path, int64_t file, MPI_Comm comm, bool writable)
    : path_(std::move(path)), file_(file), writable_(writable), sums_(std::make_unique<Checksums>()) {
  MPI_CHECK(MPI_Comm_dup(comm, &comm_));
  MPI_CHECK(MPI_Comm_rank(comm_, &rank_));
}

H5File::H5File(H5File&& other) noexcept
    : path_(std::move(other.path_)),
      file_(std::exchange(other.file_, -1)),
      comm_(std::exchange(other.comm_, MPI_COMM_NULL)),
      rank_(other.rank_),
      writable_(std::exchange(other.writable_, false)),
      sums_(std::move(other.sums_)) {}

H5File& H5File::operator=(H5File&& other) noexcept {
  if (this != &other) {
    close_quietly();
    path_ = std::move(other.path_);
    file_ = std::exchange(other.file_, -1);
    comm_ = std::exchange(other.comm_, MPI_COMM_NULL);
    rank_ = other.rank_;
    writable_ = std::exchange(other.writable_, false);
    sums_ = std::move(other.sums_);
  }
  return *this;
}

H5File::~H5File() { close_quietly(); }

void H5File::close_quietly() noexcept {
  hid_t file = std::exchange(file_, -1);
  MPI_Comm comm = std::exchange(comm_, MPI_COMM_NULL);
  writable_ = false;
  // HDF5 shuts itself down (closing every file) inside MPI_Finalize; a file
  // object that outlives it must not touch the library (or MPI) again.
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized) return;
  if (file >= 0) H5Fclose(file);
  if (comm != MPI_COMM_NULL) MPI_Comm_free(&comm);
}

void H5File::close() {
  if (file_ < 0) return;
  if (writable_) write_checksum_table();
  hid_t file = std::exchange(file_, -1);
  writable_ = false;
  if (comm_ != MPI_COMM_NULL) MPI_CHECK(MPI_Comm_free(&comm_));
  H5_CHECK(H5Fclose(file), "closing HDF5 file '{}'", path_);
}

void H5File::flush() {
  require_open("flush");
  H5_CHECK(H5Fflush(file_, H5F_SCOPE_GLOBAL), "flushing HDF5 file '{}'", path_);
}

void H5File::require_open(const char* what) const {
  MT_CHECK(file_ >= 0, "{} on an HDF5 file that is not open (last path '{}')", what, path_);
}

namespace {

// The dataset `name` of the file at `path`, or an error naming both.
Handle open_dataset(hid_t file, const std::string& path, const std::string& name, bool exists) {
  MT_CHECK(exists, "no dataset '{}' in HDF5 file '{}'", name, path);
  return Handle(H5_CHECK(H5Dopen2(file, name.c_str(), H5P_DEFAULT), "'{}' in '{}' is not a dataset", name, path),
                H5Dclose);
}

// File access through MPI-IO over comm. HDF5 duplicates comm, so the caller
// may free it while the file is open.
Handle mpio_access(const std::string& path, MPI_Comm comm) {
  Handle fapl(H5_CHECK(H5Pcreate(H5P_FILE_ACCESS), "file access list for '{}'", path), H5Pclose);
  H5_CHECK(H5Pset_fapl_mpio(fapl, comm, MPI_INFO_NULL), "MPI-IO driver for '{}'", path);
  // Metadata goes out in one collective write at flush/close rather than as
  // many small independent writes, which parallel file systems handle badly.
  H5_CHECK(H5Pset_coll_metadata_write(fapl, true), "collective metadata writes for '{}'", path);
  return fapl;
}

}  // namespace

H5File H5File::create(const std::string& path, MPI_Comm comm) {
  silence_hdf5_errors();
  int rank = 0;
  MPI_CHECK(MPI_Comm_rank(comm, &rank));
  Handle fapl = mpio_access(path, comm);
  hid_t file = H5_CHECK(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl),
                        "cannot create HDF5 file '{}' (does its directory exist and is it writable?)",
                        path);
  return H5File(path, file, comm, true);
}

H5File H5File::open(const std::string& path, MPI_Comm comm) {
  silence_hdf5_errors();
  int rank = 0;
  MPI_CHECK(MPI_Comm_rank(comm, &rank));
  // Checked first so that the common mistake gets a plain message. Every rank
  // sees the same (shared) file system, so all ranks throw together.
  std::error_code ec;
  MT_CHECK(std::filesystem::exists(path, ec), "cannot open HDF5 file '{}': no such file", path);
  Handle fapl = mpio_access(path, comm);
  hid_t file = H5_CHECK(H5Fopen(path.c_str(), H5F_ACC_RDONLY, fapl),
                        "cannot open '{}': not an HDF5 file, or truncated or corrupt", path);
  return H5File(path, file, comm, false);
}

// --- datasets -------------------------------------------------------------------

void H5File::write_impl(const std::string& name, const std::vector<uint64_t>& shape,
                        const std::vector<uint64_t>& offset_in,
                        const std::vector<uint64_t>& count_in, H5Type type, const void* data,
                        bool whole_from_rank0) {
  require_open("write");
  MT_CHECK(writable_, "writing dataset '{}': '{}' was opened read-only", name, path_);
  const char* what = whole_from_rank0 ? "write_all" : "write";
  std::vector<uint64_t> offset = offset_in, count = count_in;
  if (whole_from_rank0) {
    offset.assign(shape.size(), 0);
    count = shape;
    if (rank_ != 0) count.assign(shape.size(), 0);
  } else {
    MT_CHECK(!shape.empty(), "write of dataset '{}' in '{}': a scalar needs write_all", name, path_);
  }
  check_block(what, name, path_, shape, offset, count);
  // A scalar has no count to zero: rank 0 alone writes it.
  const bool has_data = shape.empty() ? rank_ == 0 : num_elements(count) > 0;
  MT_CHECK(!has_data || data != nullptr, "{} of dataset '{}' in '{}': no data for a block of {}",
           what, name, path_, shape_str(count));

  const hid_t mem_type = native_type(type);
  const std::vector<hsize_t> dims = to_hsize(shape);
  Handle file_space(shape.empty() ? H5Screate(H5S_SCALAR)
                                  : H5Screate_simple(int(dims.size()), dims.data(), nullptr),
                    H5Sclose);
  H5_CHECK(hid_t(file_space), "dataspace {} for dataset '{}' in '{}'", shape_str(shape), name, path_);

  // Reopen an existing dataset of the same shape and type (e.g. a tensor
  // written in several calls); anything else is a mistake worth stopping for.
  const bool existed = exists(name);
  hid_t dset_id = -1;
  if (existed) {
    dset_id = H5_CHECK(H5Dopen2(file_, name.c_str(), H5P_DEFAULT),
                       "'{}' in '{}' exists and is not a dataset", name, path_);
  } else {
    Handle lcpl(H5_CHECK(H5Pcreate(H5P_LINK_CREATE), "link list for '{}' in '{}'", name, path_),
                H5Pclose);
    H5_CHECK(H5Pset_create_intermediate_group(lcpl, 1), "parent groups of '{}' in '{}'", name, path_);
    Handle dcpl(H5_CHECK(H5Pcreate(H5P_DATASET_CREATE), "dataset list for '{}' in '{}'", name, path_),
                H5Pclose);
    // Parallel HDF5 allocates the whole dataset at creation; writing fill
    // values there too would write every checkpoint tensor twice.
    H5_CHECK(H5Pset_fill_time(dcpl, H5D_FILL_TIME_NEVER), "fill time of '{}' in '{}'", name, path_);
    dset_id = H5_CHECK(H5Dcreate2(file_, name.c_str(), mem_type, file_space, lcpl, dcpl, H5P_DEFAULT),
                       "cannot create dataset '{}' in '{}'", name, path_);
  }
  Handle dset(dset_id, H5Dclose);
  if (existed) {
    const std::vector<uint64_t> stored_shape = this->shape(name);
    MT_CHECK(stored_shape == shape, "{} of dataset '{}' in '{}': it exists with shape {}, not {}",
             what, name, path_, shape_str(stored_shape), shape_str(shape));
    Handle stored(H5_CHECK(H5Dget_type(dset), "type of dataset '{}' in '{}'", name, path_), H5Tclose);
    MT_CHECK(H5Tequal(stored, mem_type) > 0, "{} of dataset '{}' in '{}': it exists as {}, not {}",
             what, name, path_, describe_type(stored), type_name(type));
  }

  // A dataset of no elements has no storage to write to (HDF5 fails the
  // transfer); every rank knows the shape, so all skip it together.
  if (!shape.empty() && num_elements(shape) == 0) return;

  // This rank's selection in the file and the matching memory layout; a rank
  // with nothing to write selects none on both but still joins the transfer.
  hid_t mem_space_id = -1;
  if (has_data && !shape.empty()) {
    mem_space_id = select_block(file_space, offset, count, name, path_);
  } else if (has_data) {
    mem_space_id = H5Screate(H5S_SCALAR);
  } else {
    H5_CHECK(H5Sselect_none(file_space), "empty selection of dataset '{}' in '{}'", name, path_);
    const hsize_t one = 1;
    mem_space_id = H5Screate_simple(1, &one, nullptr);
    if (mem_space_id >= 0 && H5Sselect_none(mem_space_id) < 0) {
      H5Sclose(mem_space_id);
      mem_space_id = -1;
    }
  }
  Handle mem_space(H5_CHECK(mem_space_id, "memory dataspace for dataset '{}' in '{}'", name, path_),
                   H5Sclose);

  Handle xfer(H5_CHECK(H5Pcreate(H5P_DATASET_XFER), "transfer list for '{}' in '{}'", name, path_),
              H5Pclose);
  H5_CHECK(H5Pset_dxpl_mpio(xfer, H5FD_MPIO_COLLECTIVE), "collective transfer of '{}' in '{}'",
           name, path_);
  H5_CHECK(H5Dwrite(dset, mem_type, mem_space, file_space, xfer, data),
           "writing block {} + {} of dataset '{}' in '{}'", shape_str(offset), shape_str(count), name,
           path_);
  if (name != kChecksumTable) {
    // Numbered on every rank, with data or not, so the numbers agree.
    Checksums& c = *sums_;
    const std::string key = dataset_key(name);
    const auto [it, added] = c.number.try_emplace(key, c.names.size());
    if (added) c.names.push_back(key);
    if (has_data)
      record_block(c.rows, it->second, ArrayBlock{offset, count},
                   checksum_bytes(data, num_elements(count) * type_bytes(type)));
  }
}

void H5File::read_impl(const std::string& name, const std::vector<uint64_t>& offset,
                       const std::vector<uint64_t>& count, H5Type type, void* data) const {
  require_open("read");
  Handle dset = open_dataset(file_, path_, name, exists(name));
  const std::vector<uint64_t> dims = shape(name);
  check_block("read", name, path_, dims, offset, count);
  Handle stored(H5_CHECK(H5Dget_type(dset), "type of dataset '{}' in '{}'", name, path_), H5Tclose);
  const H5T_class_t cls = H5Tget_class(stored);
  MT_CHECK(cls == H5T_INTEGER || cls == H5T_FLOAT, "dataset '{}' in '{}' holds {}, which cannot be read as {}",
           name, path_, describe_type(stored), type_name(type));
  if (!dims.empty() && num_elements(count) == 0) return;  // reads are independent: nothing to join

  Handle file_space(H5_CHECK(H5Dget_space(dset), "dataspace of '{}' in '{}'", name, path_), H5Sclose);
  hid_t mem_space_id = -1;
  if (dims.empty()) {
    mem_space_id = H5Screate(H5S_SCALAR);
  } else {
    mem_space_id = select_block(file_space, offset, count, name, path_);
  }
  Handle mem_space(H5_CHECK(mem_space_id, "memory dataspace for '{}' in '{}'", name, path_), H5Sclose);
  // The default transfer list is independent I/O under the MPI-IO driver, and
  // HDF5 converts from the stored type to the one asked for.
  H5_CHECK(H5Dread(dset, native_type(type), mem_space, file_space, H5P_DEFAULT, data),
           "reading block {} + {} of dataset '{}' in '{}' as {}", shape_str(offset),
           shape_str(count), name, path_, type_name(type));
  // Checksums hash the stored bytes: a read converted to another type has other bytes.
  if (H5Tequal(stored, native_type(type)) > 0)
    check_read_block(name, ArrayBlock{offset, count}, H5Tget_size(stored), data);
}

std::vector<uint64_t> H5File::shape(const std::string& name) const {
  require_open("shape");
  Handle dset = open_dataset(file_, path_, name, exists(name));
  Handle space(H5_CHECK(H5Dget_space(dset), "dataspace of '{}' in '{}'", name, path_), H5Sclose);
  int rank = H5_CHECK(H5Sget_simple_extent_ndims(space), "rank of '{}' in '{}'", name, path_);
  std::vector<hsize_t> dims(size_t(rank), 0);
  if (rank > 0)
    H5_CHECK(H5Sget_simple_extent_dims(space, dims.data(), nullptr), "shape of '{}' in '{}'", name,
             path_);
  return std::vector<uint64_t>(dims.begin(), dims.end());
}

bool H5File::exists(const std::string& name) const {
  require_open("exists");
  // H5Lexists fails rather than answering false when a parent is missing, so
  // walk the path one link at a time.
  std::string prefix;
  size_t pos = 0;
  bool any = false;
  while (pos <= name.size()) {
    size_t next = name.find('/', pos);
    if (next == std::string::npos) next = name.size();
    if (next > pos) {
      prefix += '/';
      prefix.append(name, pos, next - pos);
      any = true;
      if (H5Lexists(file_, prefix.c_str(), H5P_DEFAULT) <= 0) return false;
    }
    pos = next + 1;
  }
  if (!any) return true;  // "/" or ""
  // The last link exists; it must also lead somewhere (a soft link may dangle).
  return H5Oexists_by_name(file_, prefix.c_str(), H5P_DEFAULT) > 0;
}

bool H5File::is_dataset(const std::string& name) const {
  if (!exists(name)) return false;
  Handle obj(H5_CHECK(H5Oopen(file_, name.c_str(), H5P_DEFAULT), "opening '{}' in '{}'", name, path_), H5Oclose);
  return H5Iget_type(obj) == H5I_DATASET;
}

std::vector<std::string> H5File::list(const std::string& group) const {
  require_open("list");
  MT_CHECK(exists(group), "no group '{}' in HDF5 file '{}'", group, path_);
  Handle g(H5_CHECK(H5Gopen2(file_, group.c_str(), H5P_DEFAULT), "'{}' in '{}' is not a group",
                    group, path_),
           H5Gclose);
  H5G_info_t info;
  H5_CHECK(H5Gget_info(g, &info), "members of group '{}' in '{}'", group, path_);
  std::vector<std::string> names;
  for (hsize_t i = 0; i < info.nlinks; ++i) {
    ssize_t len = H5_CHECK(H5Lget_name_by_idx(g, ".", H5_INDEX_NAME, H5_ITER_INC, i, nullptr, 0,
                                              H5P_DEFAULT),
                           "member {} of group '{}' in '{}'", i, group, path_);
    std::string s(size_t(len) + 1, '\0');
    H5_CHECK(H5Lget_name_by_idx(g, ".", H5_INDEX_NAME, H5_ITER_INC, i, s.data(), s.size(),
                                H5P_DEFAULT),
             "member {} of group '{}' in '{}'", i, group, path_);
    s.resize(size_t(len));
    names.push_back(std::move(s));
  }
  std::sort(names.begin(), names.end());
  return names;
}

std::string H5File::dtype_name(const std::string& name) const {
  require_open("dtype_name");
  Handle dset = open_dataset(file_, path_, name, exists(name));
  Handle type(H5_CHECK(H5Dget_type(dset), "type of dataset '{}' in '{}'", name, path_), H5Tclose);
  return describe_type(type);
}

// --- attributes -----------------------------------------------------------------

namespace {

Handle open_object(hid_t file, const std::string& obj, const std::string& path) {
  return Handle(H5_CHECK(H5Oopen(file, obj.c_str(), H5P_DEFAULT), "cannot open object '{}' in '{}'",
                         obj, path),
                H5Oclose);
}

// Writes a scalar attribute, replacing one of the same name.
void put_attr(hid_t file, const std::string& path, const std::string& obj, const std::string& name,
              hid_t type, const void* value) {
  Handle o = open_object(file, obj, path);
  htri_t there = H5_CHECK(H5Aexists(o, name.c_str()), "attribute '{}' on '{}' in '{}'", name, obj,
                          path);
  if (there > 0)
    H5_CHECK(H5Adelete(o, name.c_str()), "replacing attribute '{}' on '{}' in '{}'", name, obj, path);
  Handle space(H5_CHECK(H5Screate(H5S_SCALAR), "scalar dataspace for attribute '{}'", name), H5Sclose);
  Handle attr(H5_CHECK(H5Acreate2(o, name.c_str(), type, space, H5P_DEFAULT, H5P_DEFAULT),
                       "creating attribute '{}' on '{}' in '{}'", name, obj, path),
              H5Aclose);
  H5_CHECK(H5Awrite(attr, type, value), "writing attribute '{}' on '{}' in '{}'", name, obj, path);
}

}  // namespace

void H5File::set_attr(const std::string& name, int64_t value, const std::string& obj) {
  require_open("set_attr");
  MT_CHECK(writable_, "setting attribute '{}': '{}' was opened read-only", name, path_);
  MT_CHECK(exists(obj), "no object '{}' in '{}' to set attribute '{}' on", obj, path_, name);
  put_attr(file_, path_, obj, name, H5T_NATIVE_INT64, &value);
}

void H5File::set_attr(const std::string& name, double value, const std::string& obj) {
  require_open("set_attr");
  MT_CHECK(writable_, "setting attribute '{}': '{}' was opened read-only", name, path_);
  MT_CHECK(exists(obj), "no object '{}' in '{}' to set attribute '{}' on", obj, path_, name);
  put_attr(file_, path_, obj, name, H5T_NATIVE_DOUBLE, &value);
}

void H5File::set_attr(const std::string& name, const std::string& value, const std::string& obj) {
  require_open("set_attr");
  MT_CHECK(writable_, "setting attribute '{}': '{}' was opened read-only", name, path_);
  MT_CHECK(exists(obj), "no object '{}' in '{}' to set attribute '{}' on", obj, path_, name);
  // Variable length, so any size fits (a config as JSON), and UTF-8, so that
  // h5py returns str rather than bytes.
  Handle type(H5_CHECK(H5Tcopy(H5T_C_S1), "string type for attribute '{}'", name), H5Tclose);
  H5_CHECK(H5Tset_size(type, H5T_VARIABLE), "string type for attribute '{}'", name);
  H5_CHECK(H5Tset_cset(type, H5T_CSET_UTF8), "string type for attribute '{}'", name);
  const char* p = value.c_str();
  put_attr(file_, path_, obj, name, type, &p);
}

bool H5File::has_attr(const std::string& name, const std::string& obj) const {
  require_open("has_attr");
  if (!exists(obj)) return false;
  return H5Aexists_by_name(file_, obj.c_str(), name.c_str(), H5P_DEFAULT) > 0;
}

namespace {

// Opens a scalar (or one-element) attribute, with a clear error if it is missing.
Handle open_attr(hid_t file, const std::string& path, const std::string& obj,
                 const std::string& name) {
  htri_t there = H5Aexists_by_name(file, obj.c_str(), name.c_str(), H5P_DEFAULT);
  MT_CHECK(there > 0, "no attribute '{}' on '{}' in HDF5 file '{}'", name, obj, path);
  Handle attr(H5_CHECK(H5Aopen_by_name(file, obj.c_str(), name.c_str(), H5P_DEFAULT, H5P_DEFAULT),
                       "opening attribute '{}' on '{}' in '{}'", name, obj, path),
              H5Aclose);
  Handle space(H5_CHECK(H5Aget_space(attr), "dataspace of attribute '{}' on '{}' in '{}'", name,
                        obj, path),
               H5Sclose);
  hssize_t n = H5Sget_simple_extent_npoints(space);
  MT_CHECK(n == 1, "attribute '{}' on '{}' in '{}' holds {} values, not one", name, obj, path, n);
  return attr;
}

std::string attr_type_name(hid_t attr) {
  Handle type(H5Aget_type(attr), H5Tclose);
  return type >= 0 ? describe_type(type) : "unknown";
}

H5T_class_t attr_class(hid_t attr) {
  Handle type(H5Aget_type(attr), H5Tclose);
  return type >= 0 ? H5Tget_class(type) : H5T_NO_CLASS;
}

}  // namespace

H5File::AttrKind H5File::attr_kind(const std::string& name, const std::string& obj) const {
  require_open("attr_kind");
  MT_CHECK(exists(obj), "no object '{}' in '{}' to read attribute '{}' from", obj, path_, name);
  MT_CHECK(H5Aexists_by_name(file_, obj.c_str(), name.c_str(), H5P_DEFAULT) > 0,
           "no attribute '{}' on '{}' in HDF5 file '{}'", name, obj, path_);
  Handle attr(H5_CHECK(H5Aopen_by_name(file_, obj.c_str(), name.c_str(), H5P_DEFAULT, H5P_DEFAULT),
                       "opening attribute '{}' on '{}' in '{}'", name, obj, path_),
              H5Aclose);
  Handle space(H5_CHECK(H5Aget_space(attr), "dataspace of attribute '{}'", name), H5Sclose);
  if (H5Sget_simple_extent_npoints(space) != 1) return AttrKind::Other;
  switch (attr_class(attr)) {
    case H5T_INTEGER: return AttrKind::Integer;
    case H5T_FLOAT: return AttrKind::Float;
    case H5T_STRING: return AttrKind::String;
    default: return AttrKind::Other;
  }
}

int64_t H5File::attr_int(const std::string& name, const std::string& obj) const {
  require_open("attr_int");
  MT_CHECK(exists(obj), "no object '{}' in '{}' to read attribute '{}' from", obj, path_, name);
  Handle attr = open_attr(file_, path_, obj, name);
  MT_CHECK(attr_class(attr) == H5T_INTEGER, "attribute '{}' on '{}' in '{}' is {}, not an integer",
           name, obj, path_, attr_type_name(attr));
  int64_t value = 0;
  H5_CHECK(H5Aread(attr, H5T_NATIVE_INT64, &value), "reading attribute '{}' on '{}' in '{}'", name,
           obj, path_);
  return value;
}

double H5File::attr_double(const std::string& name, const std::string& obj) const {
  require_open("attr_double");
  MT_CHECK(exists(obj), "no object '{}' in '{}' to read attribute '{}' from", obj, path_, name);
  Handle attr = open_attr(file_, path_, obj, name);
  H5T_class_t cls = attr_class(attr);
  MT_CHECK(cls == H5T_FLOAT || cls == H5T_INTEGER, "attribute '{}' on '{}' in '{}' is {}, not a number",
           name, obj, path_, attr_type_name(attr));
  double value = 0;
  H5_CHECK(H5Aread(attr, H5T_NATIVE_DOUBLE, &value), "reading attribute '{}' on '{}' in '{}'", name,
           obj, path_);
  return value;
}

std::string H5File::attr_string(const std::string& name, const std::string& obj) const {
  require_open("attr_string");
  MT_CHECK(exists(obj), "no object '{}' in '{}' to read attribute '{}' from", obj, path_, name);
  Handle attr = open_attr(file_, path_, obj, name);
  Handle stored(H5_CHECK(H5Aget_type(attr), "type of attribute '{}' on '{}' in '{}'", name, obj,
                         path_),
                H5Tclose);
  MT_CHECK(H5Tget_class(stored) == H5T_STRING, "attribute '{}' on '{}' in '{}' is {}, not a string",
           name, obj, path_, describe_type(stored));
  Handle mem(H5_CHECK(H5Tcopy(H5T_C_S1), "string type for attribute '{}'", name), H5Tclose);
  H5_CHECK(H5Tset_cset(mem, H5Tget_cset(stored)), "string type for attribute '{}'", name);
  // Written by us (or h5py's default) as variable length; other writers may
  // use fixed-length strings, padded with NULs or spaces.
  if (H5Tis_variable_str(stored) > 0) {
    H5_CHECK(H5Tset_size(mem, H5T_VARIABLE), "string type for attribute '{}'", name);
    char* p = nullptr;
    H5_CHECK(H5Aread(attr, mem, &p), "reading attribute '{}' on '{}' in '{}'", name, obj, path_);
    std::string value = p ? p : "";
    H5free_memory(p);
    return value;
  }
  size_t size = H5Tget_size(stored);
  H5_CHECK(H5Tset_size(mem, size), "string type for attribute '{}'", name);
  H5_CHECK(H5Tset_strpad(mem, H5T_STR_NULLPAD), "string type for attribute '{}'", name);
  std::string value(size, '\0');
  H5_CHECK(H5Aread(attr, mem, value.data()), "reading attribute '{}' on '{}' in '{}'", name, obj,
           path_);
  value.resize(std::min(value.find('\0'), value.size()));
  if (H5Tget_strpad(stored) == H5T_STR_SPACEPAD) value.erase(value.find_last_not_of(' ') + 1);
  return value;
}

std::vector<std::string> H5File::attr_names(const std::string& obj) const {
  require_open("attr_names");
  MT_CHECK(exists(obj), "no object '{}' in HDF5 file '{}'", obj, path_);
  Handle o = open_object(file_, obj, path_);
  std::vector<std::string> names;
  H5_CHECK(H5Aiterate2(o, H5_INDEX_NAME, H5_ITER_INC, nullptr, collect_attr_name, &names),
           "listing attributes of '{}' in '{}'", obj, path_);
  std::sort(names.begin(), names.end());
  return names;
}

// --- checksums ------------------------------------------------------------------

std::vector<std::string> H5File::datasets() const {
  require_open("datasets");
  std::vector<std::string> names;
  H5_CHECK(H5Ovisit2(file_, H5_INDEX_NAME, H5_ITER_INC, collect_dataset, &names, H5O_INFO_BASIC),
           "listing the datasets of '{}'", path_);
  std::sort(names.begin(), names.end());
  return names;
}

void H5File::write_checksum_table() {
  // Every rank's rows, on every rank, so that rank 0 writes the whole table.
  Checksums& c = *sums_;
  const std::vector<uint64_t> table = all_gather_concat(c.rows, MPI_UINT64_T, comm_);
  if (table.empty()) return;  // nothing written, nothing to check
  write_all<int64_t>(kChecksumTable, {table.size() / kTableColumns, kTableColumns},
                     reinterpret_cast<const int64_t*>(table.data()));
  set_attr("datasets", nlohmann::json(c.names).dump(), kChecksumTable);
  set_attr("columns", "dataset (a number into 'datasets'), offset[4], count[4], XXH3-64 of the block's bytes "
           "(uint64 stored as int64)", kChecksumTable);
}

H5File::Checksums& H5File::sums() const {
  Checksums& c = *sums_;
  if (c.loaded || writable_) return c;
  c.loaded = true;
  if (!is_dataset(kChecksumTable)) return c;  // another writer's file: nothing to check
  // A table that does not read as one is damage, reported like a bad block.
  try {
    const std::vector<uint64_t> dims = shape(kChecksumTable);
    if (dims.size() != 2 || dims[1] != kTableColumns) throw DamagedFile("its shape is not [blocks, 10]");
    const std::vector<int64_t> table = read_all<int64_t>(kChecksumTable);
    const auto names = nlohmann::json::parse(attr_string("datasets", kChecksumTable), nullptr, false);
    if (!names.is_array()) throw DamagedFile("its 'datasets' attribute is not a JSON list");
    std::vector<std::vector<uint64_t>> shapes(names.size());  // of the datasets named, looked up once
    std::vector<char> looked_up(names.size(), 0);
    for (size_t r = 0; r < dims[0]; ++r) {
      const auto* row = reinterpret_cast<const uint64_t*>(table.data()) + r * kTableColumns;
      const uint64_t n = row[0];
      if (n >= names.size() || !names[n].is_string()) throw DamagedFile(fmt::format("row {} names no dataset", r));
      const std::string name = names[n].get<std::string>();
      if (!looked_up[n]) {
        if (!is_dataset(name) || shape(name).size() > kTableRank)
          throw DamagedFile(
              fmt::format("row {} names '{}', not a dataset of at most {} dimensions", r, name, kTableRank));
        shapes[n] = shape(name);
        looked_up[n] = 1;
      }
      const size_t rank = shapes[n].size();
      BlockHash b{{{row + 1, row + 1 + rank}, {row + 1 + kTableRank, row + 1 + kTableRank + rank}},
                  row[kTableColumns - 1]};
      if (!block_contains(ArrayBlock{std::vector<uint64_t>(rank, 0), shapes[n]}, b.block))
        throw DamagedFile(fmt::format("row {}: block {} lies outside '{}' {}", r, block_str(b.block), name,
                                      shape_str(shapes[n])));
      c.recorded[name].push_back(std::move(b));
    }
  } catch (const Error& e) {
    c.recorded.clear();
    c.table_problem = fmt::format("the '{}' table: {}", kChecksumTable, e.what());
    c.damaged.push_back(c.table_problem);
  }
  for (const auto& [name, blocks] : c.recorded) c.checked[name].assign(blocks.size(), 0);
  return c;
}

bool H5File::has_checksums(const std::string& name) const {
  require_open("has_checksums");
  return sums().recorded.count(dataset_key(name)) > 0;
}

void H5File::check_read_block(const std::string& name, const ArrayBlock& read, size_t elem_bytes,
                              const void* data) const {
  Checksums& c = sums();
  const auto it = c.recorded.find(dataset_key(name));
  if (it == c.recorded.end()) return;
  std::vector<char>& checked = c.checked[it->first];
  for (size_t i = 0; i < it->second.size(); ++i) {
    const BlockHash& b = it->second[i];
    if (checked[i] || !block_contains(read, b.block)) continue;
    checked[i] = 1;
    if (checksum_inner_block(data, read, b.block, elem_bytes) != b.hash)
      c.damaged.push_back(fmt::format("'{}' block {}", it->first, block_str(b.block)));
  }
}

std::vector<std::string> H5File::damaged_blocks(const std::string& name) const {
  require_open("damaged_blocks");
  if (name != kChecksumTable) return damaged_among(name, nullptr);
  if (sums().table_problem.empty()) return {};
  return {sums().table_problem};
}

std::vector<std::string> H5File::damaged_among(const std::string& name, const std::vector<size_t>* which) const {
  const auto it = sums().recorded.find(dataset_key(name));
  if (it == sums().recorded.end()) return {};
  const std::vector<BlockHash>& blocks = it->second;
  std::vector<size_t> all(blocks.size());
  std::iota(all.begin(), all.end(), size_t(0));
  if (!which) which = &all;
  Handle dset = open_dataset(file_, path_, name, true);
  Handle stored(H5_CHECK(H5Dget_type(dset), "type of dataset '{}' in '{}'", name, path_), H5Tclose);
  H5Type type = H5Type::kFloat32;
  if (!exact_type(stored, &type))
    return {fmt::format("checksummed, but stored as {}, which this reader does not hash", describe_type(stored))};
  std::vector<std::string> damaged;
  std::vector<char> buffer;
  for (size_t i : *which) {
    const ArrayBlock& b = blocks.at(i).block;
    buffer.resize(num_elements(b.count) * type_bytes(type));
    if (!buffer.empty()) {
      Handle file_space(H5_CHECK(H5Dget_space(dset), "dataspace of '{}' in '{}'", name, path_), H5Sclose);
      Handle mem_space(H5_CHECK(b.offset.empty() ? H5Screate(H5S_SCALAR)
                                                 : select_block(file_space, b.offset, b.count, name, path_),
                                "memory dataspace for '{}' in '{}'", name, path_),
                       H5Sclose);
      H5_CHECK(H5Dread(dset, native_type(type), mem_space, file_space, H5P_DEFAULT, buffer.data()),
               "reading block {} of dataset '{}' in '{}'", block_str(b), name, path_);
    }
    if (checksum_bytes(buffer.data(), buffer.size()) != blocks[i].hash)
      damaged.push_back("block " + block_str(b));
  }
  return damaged;
}

void H5File::verify_unread_blocks(const std::string& under) const {
  require_open("verify_unread_blocks");
  Checksums& c = sums();
  // The flags of every recorded block, in the table's order (the same on
  // every rank), merged over the ranks.
  std::vector<const std::string*> names;
  std::vector<char> checked;
  for (const auto& [name, flags] : c.checked)
    if (name.starts_with(under)) {
      names.push_back(&name);
      checked.insert(checked.end(), flags.begin(), flags.end());
    }
  MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, checked.data(), int(checked.size()), MPI_SIGNED_CHAR, MPI_MAX, comm_));
  int size = 1;
  MPI_CHECK(MPI_Comm_size(comm_, &size));
  // The blocks no read checked, dealt out to the ranks in turn.
  size_t at = 0, unchecked = 0;
  for (const std::string* name : names) {
    std::vector<size_t> mine;
    for (size_t i = 0; i < c.checked[*name].size(); ++i, ++at)
      if (!checked[at] && unchecked++ % size_t(size) == size_t(rank_)) mine.push_back(i);
    if (mine.empty()) continue;
    for (const std::string& d : damaged_among(*name, &mine)) c.damaged.push_back(fmt::format("'{}' {}", *name, d));
  }
  // Every rank learns every rank's findings, so that all throw the same.
  std::string mine;
  for (const std::string& d : c.damaged) mine += d + '\n';
  const std::string all = all_gather_concat(mine, MPI_CHAR, comm_);
  std::vector<std::string> found;
  for (size_t from = 0; from < all.size();) {
    const size_t end = all.find('\n', from);
    found.push_back(all.substr(from, end - from));
    from = end + 1;
  }
  std::sort(found.begin(), found.end());
  found.erase(std::unique(found.begin(), found.end()), found.end());
  if (!found.empty())
    throw DamagedFile(fmt::format("{} is damaged: {}: {}", path_,
                                  found.size() == 1 ? "one block does not match its checksum"
                                                    : fmt::format("{} blocks do not match their checksums", found.size()),
                                  fmt::join(found, "; ")));
}

}  // namespace mt
