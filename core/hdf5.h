// A thin RAII layer over the HDF5 C API for checkpoints and traces: files, tensors stored at their
// full shape, scalar and string attributes, and extendible 1-D series. Errors become ladder::Error
// naming the file. HDF5's own error stack printing is silenced: our messages say what went wrong.
//
// A file opened with a communicator is shared by its ranks through MPI-IO (parallel HDF5): opening,
// closing, creating datasets and setting attributes are collective (every rank, same arguments),
// while reads and writes of elements are independent, so each rank moves only its own pieces.
#pragma once

#include <hdf5.h>
#include <mpi.h>

#include <cstdint>
#include <string>
#include <vector>

#include <torch/torch.h>

namespace ladder::h5 {

class File {
 public:
  // `comm`: the ranks that share the file (collective); MPI_COMM_NULL: this process alone.
  static File create(const std::string& path, MPI_Comm comm = MPI_COMM_NULL);  // truncates
  static File open(const std::string& path, bool writable, MPI_Comm comm = MPI_COMM_NULL);
  File(File&& other) noexcept : id_(other.id_), rank_(other.rank_), path_(std::move(other.path_)) {
    other.id_ = -1;
  }
  File& operator=(File&&) = delete;
  ~File();
  void close();  // flushes and closes; throws on failure (destructor closes quietly)
  // Lets go of a file whose write failed without closing it: HDF5's close of a shared file after
  // a failed write can deadlock its ranks in mismatched collectives. The handle stays open inside
  // HDF5, so the process must end with std::_Exit (close_failed() is true from now on).
  void abandon();
  hid_t id() const { return id_; }
  const std::string& path() const { return path_; }
  int rank() const { return rank_; }  // in the communicator the file was opened with; 0 alone

 private:
  File(hid_t id, int rank, std::string path) : id_(id), rank_(rank), path_(std::move(path)) {}
  hid_t id_;
  int rank_;
  std::string path_;
};

// Whether a file failed to close (a write that hit a full disk or a file-size limit) or was
// abandoned. HDF5 1.10 then keeps a broken file object that crashes (or, shared, deadlocks) the
// library's own shutdown at MPI_Finalize or exit, so a process that saw this ends with std::_Exit
// after its message (trainer/tools/main.cpp).
bool close_failed();

bool exists(const File& f, const std::string& path);

// Tensors: float32 / float64 / int64 / uint8, on any device (written from a CPU copy; read to the
// CPU), at any shape. `path` may contain '/',
// whose groups are created as needed. In a shared file, write_tensor creates the dataset on every
// rank and rank 0 writes the data.
void write_tensor(const File& f, const std::string& path, const torch::Tensor& t);
torch::Tensor read_tensor(const File& f, const std::string& path);

// 1-D datasets of variable-length UTF-8 strings (h5py reads them with .asstr()). This process
// alone (not in a shared file).
void write_strings(const File& f, const std::string& path, const std::vector<std::string>& values);
std::vector<std::string> read_strings(const File& f, const std::string& path);

// Pieces of a dataset: elements [offset, offset + n) of its row-major flattening, selected as the
// few rectangular hyperslabs that make up the range, so each rank writes or reads only the part of
// the full logical tensor it owns. create_dataset is collective in a shared file; write_range and
// read_range are not.
void create_dataset(const File& f, const std::string& path, torch::ScalarType dtype,
                    const std::vector<int64_t>& shape);
void write_range(const File& f, const std::string& path, const torch::Tensor& flat, int64_t offset);
torch::Tensor read_range(const File& f, const std::string& path, int64_t offset, int64_t length);
std::vector<int64_t> dataset_shape(const File& f, const std::string& path);
std::string shape_text(const std::vector<int64_t>& shape);  // "[4, 32]", for messages
std::vector<std::string> list_group(const File& f, const std::string& group);
// Every dataset of the file, by full path without the leading '/', in name order.
std::vector<std::string> list_datasets(const File& f);

// Attributes on the root ("/") or on a dataset or group.
void set_attr(const File& f, const std::string& object, const std::string& name, int64_t value);
void set_attr(const File& f, const std::string& object, const std::string& name, double value);
void set_attr(const File& f, const std::string& object, const std::string& name,
              const std::string& value);
bool has_attr(const File& f, const std::string& object, const std::string& name);
std::vector<std::string> list_attrs(const File& f, const std::string& object);
// Any scalar attribute as text: integers in decimal, floats with 17 significant digits, strings.
std::string attr_text(const File& f, const std::string& object, const std::string& name);
int64_t get_int_attr(const File& f, const std::string& object, const std::string& name);
double get_double_attr(const File& f, const std::string& object, const std::string& name);
std::string get_string_attr(const File& f, const std::string& object, const std::string& name);

// Extendible 1-D series (chunked, unlimited): created empty, appended to, truncated.
void create_series(const File& f, const std::string& path, hid_t type);  // H5T_NATIVE_DOUBLE/INT64
void append_series(const File& f, const std::string& path, double value);
void append_series(const File& f, const std::string& path, int64_t value);
int64_t series_length(const File& f, const std::string& path);
void truncate_series(const File& f, const std::string& path, int64_t length);

}  // namespace ladder::h5
