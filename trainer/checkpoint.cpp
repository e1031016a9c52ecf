#include "trainer/checkpoint.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <sstream>

#include "core/error.h"
#include "core/hdf5.h"

namespace ladder {
namespace fs = std::filesystem;

constexpr int64_t kCheckpointVersion = 1;

std::string checkpoint_path(const std::string& run_dir, int64_t step) {
  char name[64];
  std::snprintf(name, sizeof name, "step_%08lld.h5", static_cast<long long>(step));
  return (fs::path(run_dir) / "checkpoints" / name).string();
}

namespace {

MPI_Comm file_comm(const CheckpointLayout& layout) {
  return layout.comm ? layout.comm->handle() : MPI_COMM_NULL;
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

void write_runs(const h5::File& f, const std::string& name, const models::Param& p,
                const torch::Tensor& piece, int64_t offset) {
  for (const Run& run : logical_runs(p, offset, piece.numel()))
    h5::write_range(f, name, piece.narrow(0, run.local, run.length), run.logical);
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
  const bool leader = !layout.comm || layout.comm->rank() == 0;
  if (leader) fs::create_directories(fs::path(path).parent_path());
  if (layout.comm) layout.comm->barrier();  // the folder exists before anyone opens the file
  const std::string tmp = path + ".tmp";
  const auto shard = layout.comm ? layout.shard : optim::whole_params(params);
  try {
    h5::File f = h5::File::create(tmp, file_comm(layout));
    parallel::DiLoCo* diloco = layout.diloco;
    // Where the island's own parameters and moments go: the top level, or the island's group.
    const std::string state = diloco ? "islands/" + std::to_string(layout.island) + "/" : "";
    const std::string moments = diloco ? state : std::string("optim/");
    // Collective: every rank creates every dataset and attribute with the same arguments, for the
    // whole model (pipeline stages hold only their own layers but know them all).
    for (const auto& p : params.catalog()) {
      const std::string name = "params/" + p.name;
      h5::create_dataset(f, name, torch::kFloat32, p.shape);
      h5::set_attr(f, name, "role", std::string(models::role_name(p.role)));
      std::string dims;
      for (int d : p.width_dims)
        dims += (dims.empty() ? "" : ",") + std::to_string(d);
      h5::set_attr(f, name, "width_dims", dims);
      if (!diloco) {
        h5::create_dataset(f, "optim/exp_avg/" + p.name, torch::kFloat32, p.shape);
        h5::create_dataset(f, "optim/exp_avg_sq/" + p.name, torch::kFloat32, p.shape);
        continue;
      }
      h5::create_dataset(f, "diloco/momentum/" + p.name, torch::kFloat32, p.shape);
      h5::create_dataset(f, "diloco/pending/" + p.name, torch::kFloat32, p.shape);
      for (int i = 0; i < layout.islands; ++i)
        for (const char* group : {"params/", "exp_avg/", "exp_avg_sq/"})
          h5::create_dataset(f, "islands/" + std::to_string(i) + "/" + group + p.name,
                             torch::kFloat32, p.shape);
    }
    const std::string pending = diloco ? diloco->pending_state() : std::string();
    // Independent: this rank's pieces.
    for (const auto& piece : shard) {
      const auto& p = params.all()[piece.param];
      if (!p.shard.split() && layout.tp_rank != 0) continue;  // tp rank 0 writes replicated ones
      if (p.tied_copy) continue;                              // the owning stage writes it
      write_runs(f, state + "params/" + p.name, p, optim::segment_of(p.value, piece), piece.offset);
      write_runs(f, moments + "exp_avg/" + p.name, p, covering(optimizer, false, piece),
                 piece.offset);
      write_runs(f, moments + "exp_avg_sq/" + p.name, p, covering(optimizer, true, piece),
                 piece.offset);
      if (diloco && layout.island == 0) {  // the outer state is the same on every island
        for (const auto& [group, tensor] :
             {std::pair{"params/", diloco->global(piece.param)},
              std::pair{"diloco/momentum/", diloco->momentum(piece.param)},
              std::pair{"diloco/pending/", diloco->pending(piece.param)}})
          write_runs(f, group + p.name, p, tensor.narrow(0, piece.offset, piece.length),
                     piece.offset);
      }
    }
    if (diloco) {
      h5::set_attr(f, "/", "islands", static_cast<int64_t>(layout.islands));
      h5::set_attr(f, "/", "diloco_pending", pending);
    }
    h5::write_tensor(f, "rng/torch_cpu", at::detail::getDefaultCPUGenerator().get_state());
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
    f.close();
  } catch (...) {
    if (leader) std::remove(tmp.c_str());
    throw;
  }
  // Only a complete file gets the final name: after every rank has closed it.
  if (layout.comm) layout.comm->barrier();
  if (leader && std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    throw Error(path, "cannot rename the finished checkpoint into place");
  }
  if (layout.comm) layout.comm->barrier();  // nobody looks for the file before it is there
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

CheckpointMeta read_checkpoint(const std::string& path, models::ParamStore& params,
                               optim::AdamW& optimizer, const CheckpointLayout& layout) {
  h5::File f = h5::File::open(path, /*writable=*/false, file_comm(layout));
  if (!h5::has_attr(f, "/", "format") ||
      h5::get_string_attr(f, "/", "format") != "ladder-checkpoint")
    throw Error(path, "not a ladder checkpoint");
  const int64_t version = h5::get_int_attr(f, "/", "version");
  if (version != kCheckpointVersion)
    throw Error(path, "unsupported checkpoint version " + std::to_string(version));

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
  at::Generator generator = at::detail::getDefaultCPUGenerator();
  generator.set_state(h5::read_tensor(f, "rng/torch_cpu"));
  optimizer.set_steps_taken(h5::get_int_attr(f, "/", "optimizer_steps"));

  CheckpointMeta meta;
  meta.step = h5::get_int_attr(f, "/", "step");
  meta.tokens = h5::get_int_attr(f, "/", "tokens");
  meta.lr = h5::get_double_attr(f, "/", "lr");
  meta.seed = static_cast<uint64_t>(h5::get_int_attr(f, "/", "seed"));
  meta.intermediate = h5::get_int_attr(f, "/", "intermediate") != 0;
  meta.recipe_toml = h5::get_string_attr(f, "/", "recipe");
  meta.arch = h5::get_string_attr(f, "/", "arch");
  if (h5::has_attr(f, "/", "rules")) meta.rules = h5::get_string_attr(f, "/", "rules");
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

}  // namespace ladder
