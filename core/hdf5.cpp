#include "core/hdf5.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <functional>
#include <mutex>

#include "core/error.h"

namespace ladder::h5 {
namespace {

void silence_hdf5() {
  static std::once_flag once;
  std::call_once(once, [] { H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr); });
}

// Closes an HDF5 handle of any kind at scope exit.
struct Handle {
  hid_t id;
  herr_t (*close)(hid_t);
  ~Handle() {
    if (id >= 0) close(id);
  }
};

[[noreturn]] void fail(const File& f, const std::string& what) {
  throw Error(f.path(), what);
}

hid_t check(hid_t id, const File& f, const std::string& what) {
  if (id < 0) fail(f, what);
  return id;
}

hid_t type_of(torch::ScalarType t) {
  switch (t) {
    case torch::kFloat32:
      return H5T_NATIVE_FLOAT;
    case torch::kFloat64:
      return H5T_NATIVE_DOUBLE;
    case torch::kInt64:
      return H5T_NATIVE_INT64;
    case torch::kUInt8:
      return H5T_NATIVE_UINT8;
    default:
      throw std::invalid_argument("hdf5: unsupported tensor dtype");
  }
}

hid_t link_creation_with_parents() {
  hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
  H5Pset_create_intermediate_group(lcpl, 1);
  return lcpl;
}

}  // namespace

namespace {

// File access through MPI-IO for a shared file. Metadata writes are collective (every rank creates
// every dataset anyway); metadata reads stay independent, because ranks open different datasets to
// move their own pieces (collective reads would require the same opens on every rank).
Handle file_access(MPI_Comm comm) {
  Handle fapl{H5Pcreate(H5P_FILE_ACCESS), H5Pclose};
  if (comm != MPI_COMM_NULL) {
    H5Pset_fapl_mpio(fapl.id, comm, MPI_INFO_NULL);
    H5Pset_coll_metadata_write(fapl.id, 1);
  }
  return fapl;
}

int rank_in(MPI_Comm comm) {
  int rank = 0;
  if (comm != MPI_COMM_NULL) MPI_Comm_rank(comm, &rank);
  return rank;
}

}  // namespace

File File::create(const std::string& path, MPI_Comm comm) {
  silence_hdf5();
  Handle fapl = file_access(comm);
  hid_t id = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl.id);
  if (id < 0) throw Error(path, "cannot create HDF5 file");
  return File(id, rank_in(comm), path);
}

File File::open(const std::string& path, bool writable, MPI_Comm comm) {
  silence_hdf5();
  if (H5Fis_hdf5(path.c_str()) <= 0) throw Error(path, "not an HDF5 file (missing or damaged)");
  Handle fapl = file_access(comm);
  hid_t id = H5Fopen(path.c_str(), writable ? H5F_ACC_RDWR : H5F_ACC_RDONLY, fapl.id);
  if (id < 0) throw Error(path, "cannot open HDF5 file");
  return File(id, rank_in(comm), path);
}

File::~File() {
  if (id_ >= 0) H5Fclose(id_);
}

namespace {
bool a_close_failed = false;
}

bool close_failed() {
  return a_close_failed;
}

void File::abandon() {
  id_ = -1;
  a_close_failed = true;
}

void File::close() {
  if (id_ < 0) return;
  const herr_t flushed = H5Fflush(id_, H5F_SCOPE_LOCAL);
  const herr_t closed = H5Fclose(id_);
  id_ = -1;
  if (flushed < 0 || closed < 0) {
    a_close_failed = true;
    throw Error(path_, "cannot write HDF5 file (disk full?)");
  }
}

bool exists(const File& f, const std::string& path) {
  // H5Lexists needs every parent to exist: walk down the path.
  size_t at = 0;
  while (true) {
    at = path.find('/', at + 1);
    const std::string prefix = path.substr(0, at);
    if (H5Lexists(f.id(), prefix.c_str(), H5P_DEFAULT) <= 0) return false;
    if (at == std::string::npos) return true;
  }
}

namespace {

// The tensor dtype a dataset reads into.
torch::ScalarType dtype_of(const File& f, const std::string& path) {
  if (!exists(f, path)) fail(f, "missing dataset " + path);
  Handle dset{check(H5Dopen2(f.id(), path.c_str(), H5P_DEFAULT), f, "cannot open " + path),
              H5Dclose};
  Handle ftype{H5Dget_type(dset.id), H5Tclose};
  if (H5Tget_class(ftype.id) == H5T_FLOAT)
    return H5Tget_size(ftype.id) == 4 ? torch::kFloat32 : torch::kFloat64;
  if (H5Tget_class(ftype.id) == H5T_INTEGER)
    return H5Tget_size(ftype.id) == 1 ? torch::kUInt8 : torch::kInt64;
  fail(f, "dataset " + path + " is not numeric");
}

}  // namespace

void create_dataset(const File& f, const std::string& path, torch::ScalarType dtype,
                    const std::vector<int64_t>& shape) {
  std::vector<hsize_t> dims(shape.begin(), shape.end());
  Handle space{check(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr), f,
                     "dataspace for " + path),
               H5Sclose};
  Handle lcpl{link_creation_with_parents(), H5Pclose};
  Handle dset{check(H5Dcreate2(f.id(), path.c_str(), type_of(dtype), space.id, lcpl.id, H5P_DEFAULT,
                               H5P_DEFAULT),
                    f, "cannot create dataset " + path),
              H5Dclose};
}

namespace {

// Selects elements [offset, offset + length) of the row-major flattening of `dims` in `space`: a
// partial row, whole rows, a partial row at each dimension, so at most 2 x rank + 1 hyperslabs.
void select_flat_range(hid_t space, const std::vector<hsize_t>& dims, int64_t offset,
                       int64_t length) {
  H5Sselect_none(space);
  const size_t n = dims.size();
  if (n == 0) {
    if (length > 0) H5Sselect_all(space);
    return;
  }
  // Adds the range [a, b) of the sub-array dims[k:], whose leading coordinates are `prefix`.
  std::vector<hsize_t> prefix;
  std::function<void(size_t, hsize_t, hsize_t)> add = [&](size_t k, hsize_t a, hsize_t b) {
    if (a >= b) return;
    hsize_t inner = 1;
    for (size_t j = k + 1; j < n; ++j)
      inner *= dims[j];
    auto block = [&](hsize_t first, hsize_t count) {  // dims[k] in [first, first + count), rest all
      std::vector<hsize_t> start(prefix), extent(prefix.size(), 1);
      start.push_back(first), extent.push_back(count);
      for (size_t j = k + 1; j < n; ++j)
        start.push_back(0), extent.push_back(dims[j]);
      H5Sselect_hyperslab(space, H5S_SELECT_OR, start.data(), nullptr, extent.data(), nullptr);
    };
    if (k + 1 == n) return block(a, b - a);
    hsize_t first = a / inner, last = b / inner;  // rows touched: [first, last] (last partial)
    const hsize_t head = a % inner, tail = b % inner;
    if (first == last) {  // inside one row
      prefix.push_back(first);
      add(k + 1, head, tail);
      prefix.pop_back();
      return;
    }
    if (head != 0) {
      prefix.push_back(first);
      add(k + 1, head, inner);
      prefix.pop_back();
      ++first;
    }
    if (last > first) block(first, last - first);
    if (tail != 0) {
      prefix.push_back(last);
      add(k + 1, 0, tail);
      prefix.pop_back();
    }
  };
  add(0, static_cast<hsize_t>(offset), static_cast<hsize_t>(offset + length));
}

// Runs `io(dataset, memory space, file space)` with the range selected in the file and a flat
// memory space of its length.
template <class IO>
void with_range(const File& f, const std::string& path, int64_t offset, int64_t length, IO io) {
  const auto shape = dataset_shape(f, path);
  int64_t numel = 1;
  for (int64_t d : shape)
    numel *= d;
  if (offset < 0 || length < 0 || offset + length > numel)
    fail(f, "range [" + std::to_string(offset) + ", " + std::to_string(offset + length) +
                ") is outside dataset " + path + " of " + std::to_string(numel) + " elements");
  Handle dset{H5Dopen2(f.id(), path.c_str(), H5P_DEFAULT), H5Dclose};
  Handle file_space{H5Dget_space(dset.id), H5Sclose};
  select_flat_range(file_space.id, std::vector<hsize_t>(shape.begin(), shape.end()), offset,
                    length);
  const hsize_t n = static_cast<hsize_t>(length);
  Handle mem_space{H5Screate_simple(1, &n, nullptr), H5Sclose};
  io(dset.id, mem_space.id, file_space.id);
}

}  // namespace

void write_range(const File& f, const std::string& path, const torch::Tensor& flat,
                 int64_t offset) {
  const torch::Tensor t = flat.detach().cpu().contiguous();  // a device tensor is copied
  if (t.numel() == 0) return;
  with_range(f, path, offset, t.numel(), [&](hid_t dset, hid_t mem, hid_t file) {
    if (H5Dwrite(dset, type_of(t.scalar_type()), mem, file, H5P_DEFAULT, t.data_ptr()) < 0)
      fail(f, "cannot write dataset " + path);
  });
}

torch::Tensor read_range(const File& f, const std::string& path, int64_t offset, int64_t length) {
  torch::Tensor t = torch::empty({length}, dtype_of(f, path));
  if (length == 0) return t;
  with_range(f, path, offset, length, [&](hid_t dset, hid_t mem, hid_t file) {
    if (H5Dread(dset, type_of(t.scalar_type()), mem, file, H5P_DEFAULT, t.data_ptr()) < 0)
      fail(f, "cannot read dataset " + path + " (damaged file?)");
  });
  return t;
}

void write_tensor(const File& f, const std::string& path, const torch::Tensor& tensor) {
  const torch::Tensor t = tensor.detach().cpu().contiguous();
  create_dataset(f, path, t.scalar_type(), t.sizes().vec());
  if (f.rank() == 0) write_range(f, path, t.view(-1), 0);
}

void write_strings(const File& f, const std::string& path, const std::vector<std::string>& values) {
  Handle type{H5Tcopy(H5T_C_S1), H5Tclose};
  H5Tset_size(type.id, H5T_VARIABLE);
  H5Tset_cset(type.id, H5T_CSET_UTF8);
  const hsize_t n = values.size();
  Handle space{check(H5Screate_simple(1, &n, nullptr), f, "dataspace for " + path), H5Sclose};
  Handle lcpl{link_creation_with_parents(), H5Pclose};
  Handle dset{
      check(H5Dcreate2(f.id(), path.c_str(), type.id, space.id, lcpl.id, H5P_DEFAULT, H5P_DEFAULT),
            f, "cannot create dataset " + path),
      H5Dclose};
  std::vector<const char*> data;
  for (const auto& v : values)
    data.push_back(v.c_str());
  if (n > 0 && H5Dwrite(dset.id, type.id, H5S_ALL, H5S_ALL, H5P_DEFAULT, data.data()) < 0)
    fail(f, "cannot write " + path);
}

std::vector<std::string> read_strings(const File& f, const std::string& path) {
  if (!exists(f, path)) fail(f, "missing dataset " + path);
  Handle dset{check(H5Dopen2(f.id(), path.c_str(), H5P_DEFAULT), f, "cannot open " + path),
              H5Dclose};
  Handle stored{H5Dget_type(dset.id), H5Tclose};
  if (H5Tget_class(stored.id) != H5T_STRING || !H5Tis_variable_str(stored.id))
    fail(f, path + ": not a dataset of variable-length strings");
  Handle type{H5Tcopy(H5T_C_S1), H5Tclose};
  H5Tset_size(type.id, H5T_VARIABLE);
  H5Tset_cset(type.id, H5T_CSET_UTF8);
  Handle space{H5Dget_space(dset.id), H5Sclose};
  const auto n = static_cast<size_t>(H5Sget_simple_extent_npoints(space.id));
  std::vector<char*> data(n, nullptr);
  if (n > 0 && H5Dread(dset.id, type.id, H5S_ALL, H5S_ALL, H5P_DEFAULT, data.data()) < 0)
    fail(f, "cannot read " + path);
  std::vector<std::string> out;
  for (char* p : data)
    out.emplace_back(p ? p : "");
  if (n > 0) H5Dvlen_reclaim(type.id, space.id, H5P_DEFAULT, data.data());
  return out;
}

std::vector<int64_t> dataset_shape(const File& f, const std::string& path) {
  if (!exists(f, path)) fail(f, "missing dataset " + path);
  Handle dset{check(H5Dopen2(f.id(), path.c_str(), H5P_DEFAULT), f, "cannot open " + path),
              H5Dclose};
  Handle space{H5Dget_space(dset.id), H5Sclose};
  const int rank = H5Sget_simple_extent_ndims(space.id);
  std::vector<hsize_t> dims(rank);
  H5Sget_simple_extent_dims(space.id, dims.data(), nullptr);
  return std::vector<int64_t>(dims.begin(), dims.end());
}

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string t = "[";
  for (size_t k = 0; k < shape.size(); ++k)
    t += (k ? ", " : "") + std::to_string(shape[k]);
  return t + "]";
}

torch::Tensor read_tensor(const File& f, const std::string& path) {
  const auto shape = dataset_shape(f, path);
  int64_t numel = 1;
  for (int64_t d : shape)
    numel *= d;
  return read_range(f, path, 0, numel).view(shape);
}

std::vector<std::string> list_group(const File& f, const std::string& group) {
  std::vector<std::string> names;
  if (!exists(f, group)) return names;
  Handle g{check(H5Gopen2(f.id(), group.c_str(), H5P_DEFAULT), f, "cannot open " + group),
           H5Gclose};
  H5G_info_t info;
  H5Gget_info(g.id, &info);
  for (hsize_t i = 0; i < info.nlinks; ++i) {
    const ssize_t n =
        H5Lget_name_by_idx(g.id, ".", H5_INDEX_CRT_ORDER, H5_ITER_INC, i, nullptr, 0, H5P_DEFAULT);
    std::string name;
    if (n < 0) {  // files without creation-order tracking: fall back to name order
      const ssize_t m =
          H5Lget_name_by_idx(g.id, ".", H5_INDEX_NAME, H5_ITER_INC, i, nullptr, 0, H5P_DEFAULT);
      name.resize(m);
      H5Lget_name_by_idx(g.id, ".", H5_INDEX_NAME, H5_ITER_INC, i, name.data(), m + 1, H5P_DEFAULT);
    } else {
      name.resize(n);
      H5Lget_name_by_idx(g.id, ".", H5_INDEX_CRT_ORDER, H5_ITER_INC, i, name.data(), n + 1,
                         H5P_DEFAULT);
    }
    names.push_back(name);
  }
  return names;
}

namespace {

void write_attr(const File& f, const std::string& object, const std::string& name, hid_t type,
                const void* data) {
  if (H5Aexists_by_name(f.id(), object.c_str(), name.c_str(), H5P_DEFAULT) > 0)
    H5Adelete_by_name(f.id(), object.c_str(), name.c_str(), H5P_DEFAULT);
  Handle space{H5Screate(H5S_SCALAR), H5Sclose};
  Handle attr{check(H5Acreate_by_name(f.id(), object.c_str(), name.c_str(), type, space.id,
                                      H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
                    f, "cannot create attribute " + name),
              H5Aclose};
  if (H5Awrite(attr.id, type, data) < 0) fail(f, "cannot write attribute " + name);
}

Handle open_attr(const File& f, const std::string& object, const std::string& name) {
  if (H5Aexists_by_name(f.id(), object.c_str(), name.c_str(), H5P_DEFAULT) <= 0)
    fail(f, "missing attribute " + name + " on " + object);
  return Handle{H5Aopen_by_name(f.id(), object.c_str(), name.c_str(), H5P_DEFAULT, H5P_DEFAULT),
                H5Aclose};
}

}  // namespace

void set_attr(const File& f, const std::string& object, const std::string& name, int64_t value) {
  write_attr(f, object, name, H5T_NATIVE_INT64, &value);
}

void set_attr(const File& f, const std::string& object, const std::string& name, double value) {
  write_attr(f, object, name, H5T_NATIVE_DOUBLE, &value);
}

void set_attr(const File& f, const std::string& object, const std::string& name,
              const std::string& value) {
  // A variable-length UTF-8 string: h5py reads it as str.
  Handle type{H5Tcopy(H5T_C_S1), H5Tclose};
  H5Tset_size(type.id, H5T_VARIABLE);
  H5Tset_cset(type.id, H5T_CSET_UTF8);
  const char* data = value.c_str();
  write_attr(f, object, name, type.id, &data);
}

bool has_attr(const File& f, const std::string& object, const std::string& name) {
  return H5Aexists_by_name(f.id(), object.c_str(), name.c_str(), H5P_DEFAULT) > 0;
}

std::vector<std::string> list_datasets(const File& f) {
  std::vector<std::string> names;
#if H5_VERSION_GE(1, 12, 0)
  using Info = H5O_info2_t;
#else
  using Info = H5O_info_t;
#endif
  const auto visit = [](hid_t, const char* name, const Info* info, void* out) -> herr_t {
    if (info->type == H5O_TYPE_DATASET)
      static_cast<std::vector<std::string>*>(out)->push_back(name);
    return 0;
  };
#if H5_VERSION_GE(1, 12, 0)
  const herr_t status =
      H5Ovisit3(f.id(), H5_INDEX_NAME, H5_ITER_INC, visit, &names, H5O_INFO_BASIC);
#else
  const herr_t status =
      H5Ovisit2(f.id(), H5_INDEX_NAME, H5_ITER_INC, visit, &names, H5O_INFO_BASIC);
#endif
  if (status < 0) fail(f, "cannot list the datasets");
  return names;
}

std::vector<std::string> list_attrs(const File& f, const std::string& object) {
  Handle obj{check(H5Oopen(f.id(), object.c_str(), H5P_DEFAULT), f, "cannot open " + object),
             H5Oclose};
  H5O_info_t info;
#if H5_VERSION_GE(1, 12, 0)
  H5Oget_info3(obj.id, &info, H5O_INFO_NUM_ATTRS);
#else
  H5Oget_info2(obj.id, &info, H5O_INFO_NUM_ATTRS);
#endif
  std::vector<std::string> names;
  for (hsize_t i = 0; i < info.num_attrs; ++i) {
    const ssize_t n =
        H5Aget_name_by_idx(obj.id, ".", H5_INDEX_NAME, H5_ITER_INC, i, nullptr, 0, H5P_DEFAULT);
    std::string name(static_cast<size_t>(std::max<ssize_t>(n, 0)), '\0');
    H5Aget_name_by_idx(obj.id, ".", H5_INDEX_NAME, H5_ITER_INC, i, name.data(), n + 1, H5P_DEFAULT);
    names.push_back(name);
  }
  return names;
}

std::string attr_text(const File& f, const std::string& object, const std::string& name) {
  H5T_class_t cls;
  {
    Handle attr = open_attr(f, object, name);
    Handle type{H5Aget_type(attr.id), H5Tclose};
    cls = H5Tget_class(type.id);
  }
  if (cls == H5T_INTEGER) return std::to_string(get_int_attr(f, object, name));
  if (cls == H5T_FLOAT) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.17g", get_double_attr(f, object, name));
    return buf;
  }
  if (cls == H5T_STRING) return get_string_attr(f, object, name);
  fail(f, "attribute " + name + " on " + object + " is not a number or a string");
}

int64_t get_int_attr(const File& f, const std::string& object, const std::string& name) {
  Handle attr = open_attr(f, object, name);
  int64_t v = 0;
  if (H5Aread(attr.id, H5T_NATIVE_INT64, &v) < 0) fail(f, "cannot read attribute " + name);
  return v;
}

double get_double_attr(const File& f, const std::string& object, const std::string& name) {
  Handle attr = open_attr(f, object, name);
  double v = 0;
  if (H5Aread(attr.id, H5T_NATIVE_DOUBLE, &v) < 0) fail(f, "cannot read attribute " + name);
  return v;
}

std::string get_string_attr(const File& f, const std::string& object, const std::string& name) {
  Handle attr = open_attr(f, object, name);
  Handle type{H5Aget_type(attr.id), H5Tclose};
  if (H5Tget_class(type.id) != H5T_STRING) fail(f, "attribute " + name + " is not a string");
  if (H5Tis_variable_str(type.id) > 0) {
    char* s = nullptr;  // read with the file's own type: HDF5 converts no ASCII <-> UTF-8
    if (H5Aread(attr.id, type.id, &s) < 0) fail(f, "cannot read attribute " + name);
    std::string out = s ? s : "";
    H5free_memory(s);
    return out;
  }
  std::string out(H5Tget_size(type.id), '\0');
  if (H5Aread(attr.id, type.id, out.data()) < 0) fail(f, "cannot read attribute " + name);
  out.resize(std::strlen(out.c_str()));
  return out;
}

void create_series(const File& f, const std::string& path, hid_t type) {
  hsize_t dims[1] = {0}, max[1] = {H5S_UNLIMITED}, chunk[1] = {1024};
  Handle space{H5Screate_simple(1, dims, max), H5Sclose};
  Handle dcpl{H5Pcreate(H5P_DATASET_CREATE), H5Pclose};
  H5Pset_chunk(dcpl.id, 1, chunk);
  Handle lcpl{link_creation_with_parents(), H5Pclose};
  Handle dset{check(H5Dcreate2(f.id(), path.c_str(), type, space.id, lcpl.id, dcpl.id, H5P_DEFAULT),
                    f, "cannot create series " + path),
              H5Dclose};
}

int64_t series_length(const File& f, const std::string& path) {
  return dataset_shape(f, path).at(0);
}

namespace {

void append(const File& f, const std::string& path, hid_t type, const void* value) {
  Handle dset{check(H5Dopen2(f.id(), path.c_str(), H5P_DEFAULT), f, "missing series " + path),
              H5Dclose};
  hsize_t n = 0;
  {
    Handle space{H5Dget_space(dset.id), H5Sclose};
    H5Sget_simple_extent_dims(space.id, &n, nullptr);
  }
  const hsize_t grown = n + 1, one = 1;
  if (H5Dset_extent(dset.id, &grown) < 0) fail(f, "cannot extend series " + path);
  Handle file_space{H5Dget_space(dset.id), H5Sclose};
  H5Sselect_hyperslab(file_space.id, H5S_SELECT_SET, &n, nullptr, &one, nullptr);
  Handle mem_space{H5Screate_simple(1, &one, nullptr), H5Sclose};
  if (H5Dwrite(dset.id, type, mem_space.id, file_space.id, H5P_DEFAULT, value) < 0)
    fail(f, "cannot append to series " + path);
}

}  // namespace

void append_series(const File& f, const std::string& path, double value) {
  append(f, path, H5T_NATIVE_DOUBLE, &value);
}

void append_series(const File& f, const std::string& path, int64_t value) {
  append(f, path, H5T_NATIVE_INT64, &value);
}

void truncate_series(const File& f, const std::string& path, int64_t length) {
  Handle dset{check(H5Dopen2(f.id(), path.c_str(), H5P_DEFAULT), f, "missing series " + path),
              H5Dclose};
  const hsize_t n = static_cast<hsize_t>(length);
  if (H5Dset_extent(dset.id, &n) < 0) fail(f, "cannot truncate series " + path);
}

}  // namespace ladder::h5
