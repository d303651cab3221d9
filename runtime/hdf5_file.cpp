#include "runtime/hdf5_file.h"

#include <hdf5.h>

#include <algorithm>
#include <filesystem>
#include <type_traits>

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
  }
  return -1;
}

const char* type_name(H5Type type) {
  switch (type) {
    case H5Type::kFloat32: return "float32";
    case H5Type::kFloat64: return "float64";
    case H5Type::kInt32: return "int32";
    case H5Type::kInt64: return "int64";
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

H5File::H5File(H5File&& other) noexcept
    : path_(std::move(other.path_)),
      file_(std::exchange(other.file_, -1)),
      rank_(other.rank_),
      writable_(std::exchange(other.writable_, false)) {}

H5File& H5File::operator=(H5File&& other) noexcept {
  if (this != &other) {
    close_quietly();
    path_ = std::move(other.path_);
    file_ = std::exchange(other.file_, -1);
    rank_ = other.rank_;
    writable_ = std::exchange(other.writable_, false);
  }
  return *this;
}

H5File::~H5File() { close_quietly(); }

void H5File::close_quietly() noexcept {
  hid_t file = std::exchange(file_, -1);
  writable_ = false;
  if (file < 0) return;
  // HDF5 shuts itself down (closing every file) inside MPI_Finalize; a file
  // object that outlives it must not touch the library again.
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) H5Fclose(file);
}

void H5File::close() {
  if (file_ < 0) return;
  hid_t file = std::exchange(file_, -1);
  writable_ = false;
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
  return H5File(path, file, rank, true);
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
  return H5File(path, file, rank, false);
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
}

void H5File::read_impl(const std::string& name, const std::vector<uint64_t>& offset,
                       const std::vector<uint64_t>& count, H5Type type, void* data) const {
  require_open("read");
  Handle dset = open_dataset(file_, path_, name, exists(name));
  const std::vector<uint64_t> dims = shape(name);
  check_block("read", name, path_, dims, offset, count);
  {
    Handle stored(H5_CHECK(H5Dget_type(dset), "type of dataset '{}' in '{}'", name, path_), H5Tclose);
    H5T_class_t cls = H5Tget_class(stored);
    MT_CHECK(cls == H5T_INTEGER || cls == H5T_FLOAT,
             "dataset '{}' in '{}' holds {}, which cannot be read as {}", name, path_,
             describe_type(stored), type_name(type));
  }
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

}  // namespace mt
