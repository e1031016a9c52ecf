#include "trainer/run/checkpoint.h"

#include <ATen/CPUGeneratorImpl.h>

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <sstream>
#include <unordered_map>

#include "core/error.h"
#include "core/format.h"
#include "core/hdf5.h"
#include "trainer/run/weight_average.h"

namespace ladder {
namespace fs = std::filesystem;

// 1: the first; 2: per-tensor checksums and the root attribute `complete`.
constexpr int64_t kCheckpointVersion = 2;

std::string checkpoint_path(const std::string& run_dir, int64_t step) {
  char name[64];
  std::snprintf(name, sizeof name, "step_%08lld.h5", static_cast<long long>(step));
  return (fs::path(run_dir) / "checkpoints" / name).string();
}

namespace {

// SplitMix64's finaliser (Steele, Lea & Flood, "Fast splittable pseudorandom number generators",
// 2014): a bijection of 64-bit words whose every output bit depends on every input bit.
uint64_t mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// The checksum of elements [first, first + numel) of a tensor, given as the flat `piece`: the sum
// modulo 2^64 of mix64(mix64(index) ^ bits) over its nonzero elements. Zeros add nothing, so a
// dataset element nobody wrote (HDF5's fill value) agrees with a zero written; any other change of
// one element changes the sum except with probability 2^-64.
uint64_t checksum_of(const torch::Tensor& piece, int64_t first) {
  const torch::Tensor t = piece.contiguous().cpu();
  const int64_t n = t.numel();
  uint64_t sum = 0;
  const auto add = [&](auto bits_at) {
    for (int64_t i = 0; i < n; ++i)
      if (const uint64_t bits = bits_at(i); bits != 0)
        sum += mix64(mix64(static_cast<uint64_t>(first + i)) ^ bits);
  };
  switch (t.scalar_type()) {
    case torch::kFloat32: {
      const float* x = t.data_ptr<float>();
      add([&](int64_t i) { return uint64_t{std::bit_cast<uint32_t>(x[i])}; });
      break;
    }
    case torch::kFloat64: {
      const double* x = t.data_ptr<double>();
      add([&](int64_t i) { return std::bit_cast<uint64_t>(x[i]); });
      break;
    }
    case torch::kInt64: {
      const int64_t* x = t.data_ptr<int64_t>();
      add([&](int64_t i) { return static_cast<uint64_t>(x[i]); });
      break;
    }
    case torch::kUInt8: {
      const uint8_t* x = t.data_ptr<uint8_t>();
      add([&](int64_t i) { return uint64_t{x[i]}; });
      break;
    }
    default:
      throw std::logic_error("checksum_of: unsupported dtype");
  }
  return sum;
}

// The lowest-numbered failing rank's message, on every rank of `comm` ("" when no rank failed;
// `mine` when alone). Collective: every rank calls it at the same point, failed or not, so that a
// failure on one rank ends the work on all of them alike instead of leaving them in a collective.
std::string first_failure(const parallel::Communicator* comm, const std::string& mine) {
  if (!comm || comm->size() == 1) return mine;
  const int64_t size = comm->size(), rank = comm->rank();
  torch::Tensor who = torch::tensor({mine.empty() ? int64_t{0} : size - rank}, torch::kInt64);
  comm->all_reduce(who, parallel::ReduceOp::Max);
  if (who.item<int64_t>() == 0) return "";
  const int root = static_cast<int>(size - who.item<int64_t>());
  torch::Tensor length = torch::tensor({static_cast<int64_t>(mine.size())}, torch::kInt64);
  comm->broadcast(length, root);
  torch::Tensor bytes = torch::zeros({length.item<int64_t>()}, torch::kUInt8);
  if (rank == root) std::memcpy(bytes.data_ptr(), mine.data(), mine.size());
  comm->broadcast(bytes, root);
  return std::string(reinterpret_cast<const char*>(bytes.data_ptr()), bytes.numel());
}

// What went wrong, for a message: the detail of a ladder::Error (its `where` is our own temporary
// file).
std::string describe(const std::exception& e) {
  const auto* error = dynamic_cast<const Error*>(&e);
  return error ? error->detail() : std::string(e.what());
}

// Why a write into `dir` may have failed, as far as the process can tell (HDF5 and MPI-IO do not
// pass the system's error on): a file system now short of `bytes`. (A file-size limit is refused
// before writing.)
std::string write_failure_cause(const std::string& dir, int64_t bytes) {
  struct statvfs fs_info {};
  if (::statvfs(dir.c_str(), &fs_info) == 0) {
    const double available = static_cast<double>(fs_info.f_bavail) * fs_info.f_frsize;
    if (available < static_cast<double>(bytes))
      return " (the file system is full: " + human_count(available) + "B free)";
  }
  return "";
}

// Reserves the blocks of a checkpoint of `bytes` for the file being written (fallocate without
// changing its size, so HDF5 sees an empty file): a disk or quota that cannot hold it fails here,
// before HDF5 has written anything, rather than midway. File systems without fallocate skip this.
void reserve_space(const std::string& path, int64_t bytes) {
  const int fd = ::open(path.c_str(), O_WRONLY);
  if (fd < 0) return;
  const int status = ::fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, bytes);
  const int error = status == 0 ? 0 : errno;
  ::close(fd);
  if (error == ENOSPC || error == EDQUOT)
    throw Error(path, std::string("cannot reserve ") + human_count(static_cast<double>(bytes)) +
                          "B for it (" + std::strerror(error) + ")");
}

MPI_Comm file_comm(const CheckpointLayout& layout) {
  return layout.comm && layout.comm->size() > 1 ? layout.comm->handle() : MPI_COMM_NULL;
}

// The flat piece of a moment that holds `piece` of its parameter.
torch::Tensor covering(optim::AdamW& optimizer, bool second, const optim::ParamSegment& piece) {
  const auto& segments = optimizer.segments();
  for (size_t k = 0; k < segments.size(); ++k) {
    const auto& s = segments[k];
    if (s.param == piece.param && s.offset <= piece.offset &&
        piece.offset + piece.length <= s.offset + s.length) {
      torch::Tensor& moment = second ? optimizer.exp_avg_sq(k) : optimizer.exp_avg(k);
      return moment.narrow(0, piece.offset - s.offset, piece.length);
    }
  }
  throw std::logic_error(
      "write_checkpoint: the optimizer does not hold the moments of a piece "
      "of this rank's shard");
}

// A contiguous run of a piece of a parameter's local block and where it lies in the logical tensor.
struct Run {
  int64_t local;    // offset within the piece
  int64_t logical;  // flat offset in the logical tensor
  int64_t length;
};

// Where elements [offset, offset + length) of a parameter's local block (row-major) lie in its
// logical tensor. The block is a box: along each split dimension (the experts' dimension 0 under
// expert parallelism, one dimension under tensor parallelism) it starts somewhere and is shorter;
// past the innermost split dimension k it is whole, so each index of the dimensions up to k is one
// contiguous run in both tensors (one run in all for a split along dimension 0). The zero padding
// beyond the logical tensor (a vocabulary padded to a multiple of tp) is left out.
std::vector<Run> logical_runs(const models::Param& p, int64_t offset, int64_t length) {
  const size_t dims = p.shape.size();
  std::vector<int64_t> start(dims, 0), local(p.shape);
  int innermost = -1;
  if (p.experts.split()) {
    local[0] = p.shape[0] / p.experts.size;
    start[0] = p.experts.rank * local[0];
    innermost = 0;
  }
  if (p.shard.split()) {
    const auto k = static_cast<size_t>(p.shard.dim);
    start[k] = models::block_start(p), local[k] = models::block_length(p);
    innermost = std::max(innermost, p.shard.dim);
  }
  if (innermost < 0) return {Run{0, offset, length}};
  const auto k = static_cast<size_t>(innermost);
  int64_t inner = 1;
  for (size_t i = k + 1; i < dims; ++i)
    inner *= p.shape[i];
  std::vector<int64_t> logical_stride(dims, 1);
  for (size_t i = dims - 1; i-- > 0;)
    logical_stride[i] = logical_stride[i + 1] * p.shape[i + 1];
  const int64_t block = local[k] * inner;  // local elements per index of the dimensions before k
  const int64_t valid = std::clamp<int64_t>(p.shape[k] - start[k], 0, local[k]) * inner;
  int64_t outer = 1;
  for (size_t i = 0; i < k; ++i)
    outer *= local[i];
  std::vector<Run> runs;
  for (int64_t o = offset / block; o < outer && o * block < offset + length; ++o) {
    int64_t logical = start[k] * logical_stride[k];
    int64_t rest = o;  // o as an index of the dimensions before k, the last fastest
    for (size_t i = k; i-- > 0;) {
      logical += (start[i] + rest % local[i]) * logical_stride[i];
      rest /= local[i];
    }
    const int64_t a = std::max(offset, o * block), b = std::min(offset + length, o * block + valid);
    if (b > a) runs.push_back(Run{a - offset, logical + (a - o * block), b - a});
  }
  return runs;
}

// Writes the piece's runs; returns their checksum (checksum_of) in the logical tensor.
uint64_t write_runs(const h5::File& f, const std::string& name, const models::Param& p,
                    const torch::Tensor& piece, int64_t offset) {
  uint64_t sum = 0;
  for (const Run& run : logical_runs(p, offset, piece.numel())) {
    const torch::Tensor part = piece.narrow(0, run.local, run.length);
    h5::write_range(f, name, part, run.logical);
    sum += checksum_of(part, run.logical);
  }
  return sum;
}

// Reads into `piece` (flat, elements [offset, offset + numel) of the parameter's local block) from
// the logical tensor: this rank's runs only; padding stays zero.
void read_runs(const h5::File& f, const std::string& name, const models::Param& p,
               torch::Tensor piece, int64_t offset) {
  piece.zero_();
  for (const Run& run : logical_runs(p, offset, piece.numel()))
    piece.narrow(0, run.local, run.length).copy_(h5::read_range(f, name, run.logical, run.length));
}

}  // namespace

void write_checkpoint(const std::string& path, const models::ParamStore& params,
                      optim::AdamW& optimizer, const CheckpointMeta& meta,
                      const CheckpointLayout& layout) {
  const parallel::Communicator* comm = layout.comm;
  const bool leader = !comm || comm->rank() == 0;
  const fs::path dir = fs::path(path).parent_path();
  const std::string tmp = path + ".tmp";
  const auto not_written = [&](const std::string& why) {
    return AgreedError(path, "not written: " + why +
                                 "; the earlier checkpoints are intact: fix the cause, then "
                                 "continue with --resume auto");
  };
  // Room on disk (the leader), and a file-size limit on any rank that the file would pass: refused
  // before anything is written, since a write that fails on some ranks only can leave HDF5's
  // collective close waiting forever. The agreement also orders the folder's creation before
  // anyone opens the file.
  const int64_t bytes =
      checkpoint_bytes(params, layout.diloco ? layout.islands : 0, layout.average != nullptr);
  std::string failure;
  try {
    if (leader) {
      fs::create_directories(dir);
      check_free_space(dir.string(), bytes);
    }
    rlimit limit{};
    if (::getrlimit(RLIMIT_FSIZE, &limit) == 0 && limit.rlim_cur != RLIM_INFINITY &&
        limit.rlim_cur < static_cast<rlim_t>(bytes))
      throw Error(path, (comm && comm->size() > 1 ? "rank " + std::to_string(comm->rank()) + ": "
                                                  : std::string()) +
                            "the process's file-size limit (ulimit -f) is " +
                            human_count(static_cast<double>(limit.rlim_cur)) +
                            "B, a checkpoint needs " + human_count(static_cast<double>(bytes)) +
                            "B");
  } catch (const std::exception& e) {
    failure = describe(e);
  }
  failure = first_failure(comm, failure);
  if (!failure.empty()) throw not_written(failure);

  const auto shard = comm ? layout.shard : optim::whole_params(params);
  std::optional<h5::File> file;
  std::vector<std::string> datasets;  // in creation order, the same on every rank
  std::unordered_map<std::string, size_t> index;
  std::vector<uint64_t> sums;  // this rank's part of each dataset's checksum
  const auto create = [&](const std::string& name, const std::vector<int64_t>& shape) {
    h5::create_dataset(*file, name, torch::kFloat32, shape);
    index[name] = datasets.size();
    datasets.push_back(name);
    sums.push_back(0);
  };
  // Phase 1: create the file and its datasets (collective), write this rank's pieces
  // (independent). A failure on any rank is agreed on before the collective close.
  try {
    file.emplace(h5::File::create(tmp, file_comm(layout)));
    if (leader) reserve_space(tmp, bytes);
    const h5::File& f = *file;
    parallel::DiLoCo* diloco = layout.diloco;
    // Where the island's own parameters and moments go: the top level, or the island's group.
    const std::string state = diloco ? "islands/" + std::to_string(layout.island) + "/" : "";
    const std::string moments = diloco ? state : std::string("optim/");
    // Collective: every rank creates every dataset and attribute with the same arguments, for the
    // whole model (pipeline stages hold only their own layers but know them all).
    for (const auto& p : params.catalog()) {
      const std::string name = "params/" + p.name;
      create(name, p.shape);
      h5::set_attr(f, name, "role", std::string(models::role_name(p.role)));
      std::string dims;
      for (int d : p.width_dims)
        dims += (dims.empty() ? "" : ",") + std::to_string(d);
      h5::set_attr(f, name, "width_dims", dims);
      if (layout.average) create("average/params/" + p.name, p.shape);
      if (!diloco) {
        create("optim/exp_avg/" + p.name, p.shape);
        create("optim/exp_avg_sq/" + p.name, p.shape);
        continue;
      }
      create("diloco/momentum/" + p.name, p.shape);
      create("diloco/pending/" + p.name, p.shape);
      for (int i = 0; i < layout.islands; ++i)
        for (const char* group : {"params/", "exp_avg/", "exp_avg_sq/"})
          create("islands/" + std::to_string(i) + "/" + group + p.name, p.shape);
    }
    const std::string pending = diloco ? diloco->pending_state() : std::string();
    const auto write = [&](const std::string& name, const models::Param& p,
                           const torch::Tensor& piece, int64_t offset) {
      sums[index.at(name)] += write_runs(f, name, p, piece, offset);
    };
    // Independent: this rank's pieces.
    for (const auto& piece : shard) {
      const auto& p = params.all()[piece.param];
      if (!p.shard.split() && layout.tp_rank != 0) continue;  // tp rank 0 writes replicated ones
      if (p.tied_copy) continue;                              // the owning stage writes it
      write(state + "params/" + p.name, p, optim::segment_of(p.value, piece), piece.offset);
      write(moments + "exp_avg/" + p.name, p, covering(optimizer, false, piece), piece.offset);
      write(moments + "exp_avg_sq/" + p.name, p, covering(optimizer, true, piece), piece.offset);
      if (layout.average)
        write("average/params/" + p.name, p,
              layout.average->average(piece.param).view(-1).narrow(0, piece.offset, piece.length),
              piece.offset);
      if (diloco && layout.island == 0) {  // the outer state is the same on every island
        for (const auto& [group, tensor] :
             {std::pair{"params/", diloco->global(piece.param)},
              std::pair{"diloco/momentum/", diloco->momentum(piece.param)},
              std::pair{"diloco/pending/", diloco->pending(piece.param)}})
          write(group + p.name, p, tensor.narrow(0, piece.offset, piece.length), piece.offset);
      }
    }
    if (layout.average) h5::set_attr(f, "/", "average_count", layout.average->count());
    if (diloco) {
      h5::set_attr(f, "/", "islands", static_cast<int64_t>(layout.islands));
      h5::set_attr(f, "/", "diloco_pending", pending);
    }
    const torch::Tensor rng = at::detail::getDefaultCPUGenerator().get_state();
    h5::write_tensor(f, "rng/torch_cpu", rng);  // the data from the file's rank 0
    index["rng/torch_cpu"] = datasets.size();
    datasets.push_back("rng/torch_cpu");
    sums.push_back(leader ? checksum_of(rng.view(-1), 0) : 0);
  } catch (const std::exception& e) {
    failure = describe(e) + write_failure_cause(dir.string(), bytes);
  }
  failure = first_failure(comm, failure);

  // Phase 2 (collective): the checksums summed over the ranks, the metadata, `complete` last.
  if (failure.empty()) {
    try {
      const h5::File& f = *file;
      const auto n = static_cast<int64_t>(sums.size());
      // As 32-bit halves in int64, so the sum over ranks cannot overflow; recombined mod 2^64.
      torch::Tensor halves = torch::empty({2, n}, torch::kInt64);
      for (int64_t i = 0; i < n; ++i)
        halves[0][i] = static_cast<int64_t>(sums[i] >> 32),
        halves[1][i] = static_cast<int64_t>(sums[i] & 0xffffffffULL);
      if (comm) comm->all_reduce(halves);
      for (int64_t i = 0; i < n; ++i) {
        const uint64_t total = (static_cast<uint64_t>(halves[0][i].item<int64_t>()) << 32) +
                               static_cast<uint64_t>(halves[1][i].item<int64_t>());
        h5::set_attr(f, datasets[i], "checksum", std::bit_cast<int64_t>(total));
      }
      h5::set_attr(f, "/", "format", std::string("ladder-checkpoint"));
      h5::set_attr(f, "/", "version", kCheckpointVersion);
      h5::set_attr(f, "/", "step", meta.step);
      h5::set_attr(f, "/", "tokens", meta.tokens);
      h5::set_attr(f, "/", "optimizer_steps", optimizer.steps_taken());
      h5::set_attr(f, "/", "lr", meta.lr);
      h5::set_attr(f, "/", "seed", static_cast<int64_t>(meta.seed));
      h5::set_attr(f, "/", "intermediate", static_cast<int64_t>(meta.intermediate));
      h5::set_attr(f, "/", "recipe", meta.recipe_toml);
      h5::set_attr(f, "/", "arch", meta.arch);
      h5::set_attr(f, "/", "precision", meta.precision);
      h5::set_attr(f, "/", "N", meta.accounting.non_embedding_params);
      h5::set_attr(f, "/", "total_params", meta.accounting.total_params);
      h5::set_attr(f, "/", "embedding_params", meta.accounting.embedding_params);
      h5::set_attr(f, "/", "active_params", meta.accounting.active_params);
      h5::set_attr(f, "/", "flops_per_token", meta.accounting.flops_per_token);
      h5::set_attr(f, "/", "rules", meta.rules);
      h5::set_attr(f, "/", "complete", int64_t{1});
      file->close();
    } catch (const std::exception& e) {
      failure = describe(e) + write_failure_cause(dir.string(), bytes);
    }
    failure = first_failure(comm, failure);
  }
  if (!failure.empty()) {
    // Not closed: after a failed write HDF5's collective close can leave the ranks waiting in
    // different collectives (seen with MPI-IO at 2 ranks). The process ends with _Exit after the
    // message instead (core/hdf5.h).
    if (file) file->abandon();
    if (comm) comm->barrier();
    if (leader) std::remove(tmp.c_str());
    throw not_written(failure);
  }
  // Only a complete file gets the final name: after every rank has closed it. The agreement on
  // the rename also keeps anyone from looking for the file before it is there.
  if (leader && std::rename(tmp.c_str(), path.c_str()) != 0) {
    failure =
        std::string("cannot rename the finished file into place (") + std::strerror(errno) + ")";
    std::remove(tmp.c_str());
  }
  failure = first_failure(comm, failure);
  if (!failure.empty()) throw not_written(failure);
}

std::vector<std::string> load_matching_params(const std::string& path, models::ParamStore& params,
                                              const CheckpointLayout& layout) {
  h5::File f = h5::File::open(path, /*writable=*/false, file_comm(layout));
  if (!h5::has_attr(f, "/", "format") ||
      h5::get_string_attr(f, "/", "format") != "ladder-checkpoint")
    throw Error(path, "not a ladder checkpoint");
  for (const std::string& name : h5::list_group(f, "params")) {
    const auto it = std::find_if(params.catalog().begin(), params.catalog().end(),
                                 [&](const models::Param& p) { return p.name == name; });
    if (it == params.catalog().end())
      throw Error(path, "holds parameter " + name + ", which the recipe's model does not have");
    const auto shape = h5::dataset_shape(f, "params/" + name);
    if (shape != it->shape)
      throw Error(path, "parameter " + name + " has shape " + h5::shape_text(shape) +
                            " but the recipe builds " + h5::shape_text(it->shape));
  }
  torch::NoGradGuard no_grad;
  std::vector<std::string> fresh;
  for (auto& p : params.all()) {
    if (!h5::exists(f, "params/" + p.name)) continue;
    read_runs(f, "params/" + p.name, p, p.value.detach().view(-1), 0);
  }
  for (const auto& p : params.catalog())
    if (!h5::exists(f, "params/" + p.name)) fresh.push_back(p.name);
  return fresh;
}

namespace {

void check_format(h5::File& f, const std::string& path) {
  if (!h5::has_attr(f, "/", "format") ||
      h5::get_string_attr(f, "/", "format") != "ladder-checkpoint")
    throw Error(path, "not a ladder checkpoint");
  const int64_t version = h5::get_int_attr(f, "/", "version");
  if (version < 1 || version > kCheckpointVersion)
    throw Error(path, "unsupported checkpoint version " + std::to_string(version));
}

CheckpointMeta meta_of(h5::File& f) {
  CheckpointMeta meta;
  meta.step = h5::get_int_attr(f, "/", "step");
  meta.tokens = h5::get_int_attr(f, "/", "tokens");
  meta.lr = h5::get_double_attr(f, "/", "lr");
  meta.seed = static_cast<uint64_t>(h5::get_int_attr(f, "/", "seed"));
  meta.intermediate = h5::get_int_attr(f, "/", "intermediate") != 0;
  meta.recipe_toml = h5::get_string_attr(f, "/", "recipe");
  meta.arch = h5::get_string_attr(f, "/", "arch");
  if (h5::has_attr(f, "/", "precision")) meta.precision = h5::get_string_attr(f, "/", "precision");
  if (h5::has_attr(f, "/", "flops_per_token"))
    meta.accounting.flops_per_token = h5::get_double_attr(f, "/", "flops_per_token");
  if (h5::has_attr(f, "/", "rules")) meta.rules = h5::get_string_attr(f, "/", "rules");
  meta.islands = h5::has_attr(f, "/", "islands") ? h5::get_int_attr(f, "/", "islands") : 0;
  return meta;
}

}  // namespace

CheckpointMeta read_checkpoint_meta(const std::string& path) {
  if (!fs::exists(path)) throw Error(path, "no such checkpoint");
  h5::File f = h5::File::open(path, /*writable=*/false);
  check_format(f, path);
  CheckpointMeta meta = meta_of(f);
  f.close();
  return meta;
}

Recipe checkpoint_recipe(const CheckpointMeta& meta, const std::string& path) {
  // One process on the CPU: the layout the run trained under does not change the model.
  RecipeOptions one_process;
  one_process.overrides = {"parallel.tp=1",
                           "parallel.pp=1",
                           "parallel.dp=1",
                           "parallel.ep=1",
                           "parallel.islands=1",
                           "parallel.sequence_parallel=false",
                           "parallel.virtual_stages=1",
                           "parallel.stage_layers=[]",
                           "parallel.microbatches=0",
                           "parallel.schedule=\"1f1b\"",
                           "optim.zero=0",
                           "train.device=\"cpu\""};
  return parse_recipe(meta.recipe_toml, path + " (its recipe)",
                      fs::path(path).parent_path().string(), one_process);
}

CheckpointMeta read_checkpoint(const std::string& path, models::ParamStore& params,
                               optim::AdamW& optimizer, const CheckpointLayout& layout) {
  h5::File f = h5::File::open(path, /*writable=*/false, file_comm(layout));
  check_format(f, path);

  torch::NoGradGuard no_grad;
  auto& all = params.all();
  for (auto& p : all) {
    const std::string name = "params/" + p.name;
    if (!h5::exists(f, name))
      throw Error(path, "has no parameter " + p.name + ": the recipe builds a different model");
    const auto shape = h5::dataset_shape(f, name);
    if (shape != p.shape)
      throw Error(path, "parameter " + p.name + " has shape " + h5::shape_text(shape) +
                            " but the recipe builds " + h5::shape_text(p.shape));
    read_runs(f, name, p, p.value.detach().view(-1), 0);
  }
  const auto stored = h5::list_group(f, "params");
  if (stored.size() != params.catalog().size())
    throw Error(path, "holds " + std::to_string(stored.size()) +
                          " parameters but the recipe builds " +
                          std::to_string(params.catalog().size()));
  // A DiLoCo checkpoint's /params is the global model; the island's own state lies beside it.
  parallel::DiLoCo* diloco = layout.diloco;
  const int64_t islands = h5::has_attr(f, "/", "islands") ? h5::get_int_attr(f, "/", "islands") : 0;
  if (islands > 0 && !diloco)
    throw Error(path, "was written by a DiLoCo run of " + std::to_string(islands) +
                          " islands: resume it with parallel.islands = " + std::to_string(islands) +
                          " (or diloco.single_island), or start a new run from its global model "
                          "with --init-from");
  if (diloco && islands != layout.islands)
    throw Error(path, islands == 0 ? "was written without DiLoCo: start a DiLoCo run from it with "
                                     "--init-from"
                                   : "was written by a DiLoCo run of " + std::to_string(islands) +
                                         " islands, but the recipe has parallel.islands = " +
                                         std::to_string(layout.islands));
  const std::string state = diloco ? "islands/" + std::to_string(layout.island) + "/" : "";
  const std::string moments = diloco ? state : std::string("optim/");
  if (diloco) {
    for (size_t k = 0; k < all.size(); ++k) {
      models::Param& p = all[k];
      read_runs(f, "params/" + p.name, p, diloco->global(k), 0);
      read_runs(f, "diloco/momentum/" + p.name, p, diloco->momentum(k), 0);
      read_runs(f, "diloco/pending/" + p.name, p, diloco->pending(k), 0);
      read_runs(f, state + "params/" + p.name, p, p.value.detach().view(-1), 0);
    }
    diloco->set_pending_state(h5::get_string_attr(f, "/", "diloco_pending"));
  }
  const auto& segments = optimizer.segments();
  for (size_t k = 0; k < segments.size(); ++k) {
    const auto& s = segments[k];
    const models::Param& p = all[s.param];
    read_runs(f, moments + "exp_avg/" + p.name, p, optimizer.exp_avg(k), s.offset);
    read_runs(f, moments + "exp_avg_sq/" + p.name, p, optimizer.exp_avg_sq(k), s.offset);
  }
  if (WeightAverages* average = layout.average) {
    // A checkpoint without an average (a branch from a run that kept none) starts one afresh.
    const bool stored = h5::has_attr(f, "/", "average_count");
    average->count() = stored ? h5::get_int_attr(f, "/", "average_count") : 0;
    if (stored)
      for (size_t k = 0; k < all.size(); ++k)
        read_runs(f, "average/params/" + all[k].name, all[k], average->average(k).view(-1), 0);
  }
  at::Generator generator = at::detail::getDefaultCPUGenerator();
  generator.set_state(h5::read_tensor(f, "rng/torch_cpu"));
  optimizer.set_steps_taken(h5::get_int_attr(f, "/", "optimizer_steps"));

  CheckpointMeta meta = meta_of(f);
  f.close();
  return meta;
}

void check_same_rules(const std::string& path, const std::string& stored,
                      const std::string& current) {
  if (stored.empty() || stored == current) return;
  std::istringstream a(stored), b(current);
  std::string header, line_a, line_b;
  std::getline(a, header), std::getline(b, header);
  while (true) {
    const bool more_a = static_cast<bool>(std::getline(a, line_a));
    const bool more_b = static_cast<bool>(std::getline(b, line_b));
    if (!more_a && !more_b) break;
    if (line_a == line_b) continue;
    // name role shape base_shape init_std lr_multiplier weight_decay eps
    std::istringstream columns(header);
    std::vector<std::string> names, va, vb;
    for (std::string c; std::getline(columns, c, '\t');)
      names.push_back(c);
    std::istringstream sa(line_a), sb(line_b);
    for (std::string c; std::getline(sa, c, '\t');)
      va.push_back(c);
    for (std::string c; std::getline(sb, c, '\t');)
      vb.push_back(c);
    std::string what =
        va.empty() ? "the recipe builds " + (vb.empty() ? "" : vb[0]) : "parameter " + va[0];
    for (size_t i = 1; i < names.size() && i < va.size() && i < vb.size(); ++i)
      if (va[i] != vb[i]) {
        what = "parameter " + va[0] + " was trained with " + names[i] + " " + va[i] +
               " but the recipe gives " + vb[i];
        break;
      }
    throw Error(path, what +
                          ": resuming keeps the parametrization's rules ([mup], optim.lr, "
                          "optim.weight_decay, optim.eps); resume with the recipe the run was "
                          "trained with");
  }
}

std::vector<int64_t> checkpoint_steps(const std::string& run_dir) {
  std::vector<int64_t> steps;
  const fs::path dir = fs::path(run_dir) / "checkpoints";
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return steps;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    long long step = 0;
    char tail[8] = {0};
    // Exactly step_XXXXXXXX.h5: temporary files (".h5.tmp") do not match.
    if (std::sscanf(name.c_str(), "step_%lld.%7s", &step, tail) == 2 && std::string(tail) == "h5" &&
        name.size() == std::string("step_00000000.h5").size())
      steps.push_back(step);
  }
  std::sort(steps.begin(), steps.end());
  return steps;
}

std::optional<std::string> newest_checkpoint(const std::string& run_dir) {
  const auto steps = checkpoint_steps(run_dir);
  if (steps.empty()) return std::nullopt;
  return checkpoint_path(run_dir, steps.back());
}

std::string checkpoint_problem(const std::string& path, int part, int parts) {
  try {
    if (!fs::exists(path)) return "missing";
    h5::File f = h5::File::open(path, /*writable=*/false);
    if (!h5::has_attr(f, "/", "format") ||
        h5::get_string_attr(f, "/", "format") != "ladder-checkpoint")
      return "not a ladder checkpoint";
    if (h5::get_int_attr(f, "/", "version") < 2) return "";  // written before checksums
    if (!h5::has_attr(f, "/", "complete") || h5::get_int_attr(f, "/", "complete") != 1)
      return "incomplete: its write did not finish";
    const std::vector<std::string> names = h5::list_datasets(f);
    for (size_t i = static_cast<size_t>(part); i < names.size(); i += static_cast<size_t>(parts)) {
      if (!h5::has_attr(f, names[i], "checksum")) return "tensor " + names[i] + " has no checksum";
      const auto stored = std::bit_cast<uint64_t>(h5::get_int_attr(f, names[i], "checksum"));
      if (checksum_of(h5::read_tensor(f, names[i]).view(-1), 0) != stored)
        return "tensor " + names[i] + " does not match its checksum";
    }
    return "";
  } catch (const std::exception& e) {
    return "cannot be read: " + describe(e);
  }
}

std::string agreed_checkpoint_problem(const std::string& path, const parallel::Communicator* comm) {
  const int rank = comm ? comm->rank() : 0, size = comm ? comm->size() : 1;
  return first_failure(comm, checkpoint_problem(path, rank, size));
}

std::optional<std::string> newest_sound_checkpoint(const std::string& run_dir,
                                                   const parallel::Communicator* comm) {
  const int rank = comm ? comm->rank() : 0;
  const std::vector<int64_t> steps = checkpoint_steps(run_dir);
  std::string damaged;  // "path (problem)", for the message when none is sound
  for (auto step = steps.rbegin(); step != steps.rend(); ++step) {
    const std::string path = checkpoint_path(run_dir, *step);
    const std::string problem = agreed_checkpoint_problem(path, comm);
    if (problem.empty()) return path;
    damaged += (damaged.empty() ? "" : ", ") + path + " (" + problem + ")";
    const std::string aside = path + ".damaged";
    spdlog::warn("{} is damaged ({}): kept as {}; trying the checkpoint before it", path, problem,
                 aside);
    if (rank == 0 && std::rename(path.c_str(), aside.c_str()) != 0)
      spdlog::warn("cannot rename {} to {} ({})", path, aside, std::strerror(errno));
    if (comm) comm->barrier();
  }
  if (!steps.empty())
    throw AgreedError(run_dir + "/checkpoints",
                      "every checkpoint is damaged: " + damaged +
                          "; they are kept as *.damaged; repair one and resume it with --resume "
                          "PATH, or start a new run");
  return std::nullopt;
}

int64_t checkpoint_bytes(const models::ParamStore& params, int islands, bool average) {
  // Parameters and two moments; a DiLoCo checkpoint adds the global model, momentum and pending
  // pseudo-gradients, and every island's parameters and moments; an average of the weights one.
  const int64_t copies = (islands > 0 ? 3 + 3 * islands : 3) + (average ? 1 : 0);
  int64_t elements = 0;
  for (const auto& p : params.catalog()) {
    int64_t n = 1;
    for (int64_t d : p.shape)
      n *= d;
    elements += n;
  }
  return elements * copies * static_cast<int64_t>(sizeof(float)) + (64 << 10);  // + the RNG
}

void check_free_space(const std::string& dir, int64_t bytes) {
  struct statvfs fs_info {};
  if (::statvfs(dir.c_str(), &fs_info) != 0)
    throw Error(dir, std::string("cannot query the free space (") + std::strerror(errno) + ")");
  const double available = static_cast<double>(fs_info.f_bavail) * fs_info.f_frsize;
  // HDF5's metadata and the file system's blocks: 5% and 16 MiB on top of the tensors.
  const double needed = static_cast<double>(bytes) * 1.05 + (16 << 20);
  if (available < needed)
    throw Error(dir, "the file system has " + human_count(available) +
                         "B free, a checkpoint needs " + human_count(needed) +
                         "B (with a margin for HDF5's metadata)");
}

int remove_unfinished_checkpoints(const std::string& run_dir) {
  int removed = 0;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(fs::path(run_dir) / "checkpoints", ec)) {
    const std::string name = e.path().filename().string();
    if (name.starts_with("step_") && name.ends_with(".h5.tmp") && fs::remove(e.path(), ec))
      ++removed;
  }
  return removed;
}

}  // namespace ladder
