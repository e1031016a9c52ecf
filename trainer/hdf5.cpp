#include "trainer/hdf5.h"

#include <cstring>
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

File File::create(const std::string& path) {
  silence_hdf5();
  hid_t id = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  if (id < 0) throw Error(path, "cannot create HDF5 file");
  return File(id, path);
}

File File::open(const std::string& path, bool writable) {
  silence_hdf5();
  if (H5Fis_hdf5(path.c_str()) <= 0) throw Error(path, "not an HDF5 file (missing or damaged)");
  hid_t id = H5Fopen(path.c_str(), writable ? H5F_ACC_RDWR : H5F_ACC_RDONLY, H5P_DEFAULT);
  if (id < 0) throw Error(path, "cannot open HDF5 file");
  return File(id, path);
}

File::~File() {
  if (id_ >= 0) H5Fclose(id_);
}

void File::close() {
  if (id_ < 0) return;
  const herr_t flushed = H5Fflush(id_, H5F_SCOPE_LOCAL);
  const herr_t closed = H5Fclose(id_);
  id_ = -1;
  if (flushed < 0 || closed < 0) throw Error(path_, "cannot write HDF5 file (disk full?)");
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

void write_tensor(const File& f, const std::string& path, const torch::Tensor& tensor) {
  const torch::Tensor t = tensor.detach().contiguous();
  std::vector<hsize_t> dims(t.sizes().begin(), t.sizes().end());
  Handle space{check(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr), f,
                     "dataspace for " + path),
               H5Sclose};
  Handle lcpl{link_creation_with_parents(), H5Pclose};
  const hid_t type = type_of(t.scalar_type());
  Handle dset{
      check(H5Dcreate2(f.id(), path.c_str(), type, space.id, lcpl.id, H5P_DEFAULT, H5P_DEFAULT), f,
            "cannot create dataset " + path),
      H5Dclose};
  if (t.numel() > 0 && H5Dwrite(dset.id, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, t.data_ptr()) < 0)
    fail(f, "cannot write dataset " + path);
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

torch::Tensor read_tensor(const File& f, const std::string& path) {
  const auto shape = dataset_shape(f, path);
  Handle dset{H5Dopen2(f.id(), path.c_str(), H5P_DEFAULT), H5Dclose};
  Handle ftype{H5Dget_type(dset.id), H5Tclose};
  torch::ScalarType st;
  if (H5Tget_class(ftype.id) == H5T_FLOAT) {
    st = H5Tget_size(ftype.id) == 4 ? torch::kFloat32 : torch::kFloat64;
  } else if (H5Tget_class(ftype.id) == H5T_INTEGER) {
    st = H5Tget_size(ftype.id) == 1 ? torch::kUInt8 : torch::kInt64;
  } else {
    fail(f, "dataset " + path + " is not numeric");
  }
  torch::Tensor t = torch::empty(shape, st);
  if (t.numel() > 0 &&
      H5Dread(dset.id, type_of(st), H5S_ALL, H5S_ALL, H5P_DEFAULT, t.data_ptr()) < 0)
    fail(f, "cannot read dataset " + path + " (damaged file?)");
  return t;
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
