#include "trainer/tools/inspect.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <map>
#include <set>
#include <tuple>

#include "core/error.h"
#include "core/hdf5.h"
#include "core/trace_schema.h"
#include "data/dataset.h"
#include "trainer/run/checkpoint.h"

namespace ladder {
namespace fs = std::filesystem;
namespace {

void print_attrs(const h5::File& f, const std::vector<std::string>& ints,
                 const std::vector<std::string>& doubles, const std::vector<std::string>& strings) {
  for (const auto& a : ints)
    if (h5::has_attr(f, "/", a))
      std::printf("%-18s %lld\n", a.c_str(), (long long)h5::get_int_attr(f, "/", a));
  for (const auto& a : doubles)
    if (h5::has_attr(f, "/", a))
      std::printf("%-18s %.6g\n", a.c_str(), h5::get_double_attr(f, "/", a));
  for (const auto& a : strings)
    if (h5::has_attr(f, "/", a))
      std::printf("%-18s %s\n", a.c_str(), h5::get_string_attr(f, "/", a).c_str());
}

// Hidden matrix kind -> the mean over layers of its last recorded top singular value ("layers.3.
// attn.wq" is of kind "attn.wq"); empty for a trace without spectra.
std::map<std::string, double> last_spectra(const h5::File& f) {
  std::map<std::string, std::pair<double, int>> sums;
  if (!h5::exists(f, "spectra") || h5::series_length(f, "spectra/step") == 0) return {};
  for (const auto& name : h5::list_group(f, "spectra")) {
    if (name == "step") continue;
    const torch::Tensor values = h5::read_tensor(f, "spectra/" + name);
    std::string kind = name;
    if (kind.rfind("layers.", 0) == 0) kind = kind.substr(kind.find('.', 7) + 1);
    auto& [sum, count] = sums[kind];
    sum += values[values.numel() - 1].item<double>();
    ++count;
  }
  std::map<std::string, double> means;
  for (const auto& [kind, sum_count] : sums)
    means[kind] = sum_count.first / sum_count.second;
  return means;
}

void print_spectra(const h5::File& f) {
  const int64_t rows = h5::exists(f, "spectra") ? h5::series_length(f, "spectra/step") : 0;
  if (rows == 0) return;
  const auto steps = h5::read_tensor(f, "spectra/step");
  std::printf("\ntop singular values at step %lld (mean over layers; %lld records)\n",
              (long long)steps[rows - 1].item<int64_t>(), (long long)rows);
  for (const auto& [kind, sigma] : last_spectra(f))
    std::printf("  %-16s %.4g\n", kind.c_str(), sigma);
}

void inspect_checkpoint(const h5::File& f) {
  std::printf("checkpoint         %s\n", f.path().c_str());
  print_attrs(f,
              {"step", "tokens", "optimizer_steps", "intermediate", "N", "total_params",
               "embedding_params", "active_params", "seed"},
              {"lr", "flops_per_token"}, {"arch"});
  if (h5::has_attr(f, "/", "islands")) {
    const std::string pending = h5::get_string_attr(f, "/", "diloco_pending");
    std::printf(
        "%-18s %lld: params/ is the global model; islands/<i>/ hold each island's own "
        "parameters and AdamW moments, diloco/ the outer momentum%s\n",
        "diloco islands", (long long)h5::get_int_attr(f, "/", "islands"),
        pending.empty() ? "" : (" and pending exchanges (" + pending + ")").c_str());
  }
  std::printf("\n%-32s %-10s %s\n", "parameter", "role", "shape");
  for (const auto& name : h5::list_group(f, "params")) {
    const std::string path = "params/" + name;
    std::printf("%-32s %-10s %s\n", name.c_str(), h5::get_string_attr(f, path, "role").c_str(),
                h5::shape_text(h5::dataset_shape(f, path)).c_str());
  }
}

void inspect_trace(const h5::File& f) {
  std::printf("trace              %s\n", f.path().c_str());
  print_attrs(f, {"N", "total_params", "width", "depth", "seq_len", "global_batch", "total_steps"},
              {"flops_per_token", "lr", "weight_decay", "width_multiplier"},
              {"arch", "parametrization", "wd_rule"});
  for (const char* group : {"train", "eval"}) {
    const int64_t n = h5::series_length(f, std::string(group) + "/step");
    std::printf("%-18s %lld rows", group, (long long)n);
    if (n > 0) {
      const auto steps = h5::read_tensor(f, std::string(group) + "/step");
      const auto loss = h5::read_tensor(f, std::string(group) + "/loss");
      std::printf(", last: step %lld loss %.4f", (long long)steps[n - 1].item<int64_t>(),
                  loss[n - 1].item<double>());
    }
    std::printf("\n");
  }
  const int64_t c = h5::series_length(f, trace_schema::path("checkpoints", "step"));
  std::printf("%-18s %lld\n", "checkpoints", (long long)c);
  if (h5::has_attr(f, "/", "experts") && h5::get_int_attr(f, "/", "experts") > 0) {
    print_attrs(f,
                {"experts", "top_k", "shared_experts", "expert_ffn", "active_params", "active_N"},
                {"granularity"}, {});
    const int64_t n = h5::series_length(f, trace_schema::path("train", "step"));
    if (n > 0 && h5::exists(f, trace_schema::path("train", "moe_load_cv"))) {
      auto last = [&](const char* name) {
        return h5::read_tensor(f, trace_schema::path("train", name))[n - 1].item<double>();
      };
      std::printf(
          "%-18s aux loss %.4f, router z-loss %.3f, load max/mean %.2f, load cv %.3f, "
          "dropped %.2f%%\n",
          "routing (last)", last("moe_aux_loss"), last("moe_z_loss"),
          last("moe_load_max_over_mean"), last("moe_load_cv"), 100 * last("moe_dropped_fraction"));
    }
  }
  print_spectra(f);
}

void inspect_dataset(const std::string& dir) {
  const auto meta = data::DatasetMeta::read(dir);
  std::printf("dataset            %s\n", dir.c_str());
  std::printf("tokenizer          %s (%s), vocab %u, end-of-document %u\n",
              meta.tokenizer_kind.c_str(), meta.tokenizer_identity.c_str(), meta.vocab_size,
              meta.eod_id);
  for (const char* split : {"train", "val"}) {
    const auto& s = meta.split(split);
    std::printf("%-18s %llu documents, %llu tokens, %zu shards\n", split,
                (unsigned long long)s.documents, (unsigned long long)s.tokens, s.shards.size());
  }
  if (!meta.domains.empty()) {
    std::printf("domains            %zu (train documents / tokens, val documents / tokens)\n",
                meta.domains.size());
    for (size_t i = 0; i < meta.domains.size(); ++i) {
      const auto &t = meta.train.domains[i].second, &v = meta.val.domains[i].second;
      std::printf("  %-16s %6llu / %-11llu %5llu / %llu\n", meta.domains[i].c_str(),
                  (unsigned long long)t.documents, (unsigned long long)t.tokens,
                  (unsigned long long)v.documents, (unsigned long long)v.tokens);
    }
  }
  std::printf("made from          %zu input files, %.2f MB, val_fraction %.3g, seed %llu\n",
              meta.inputs.size(), meta.input_bytes / 1e6, meta.val_fraction,
              (unsigned long long)meta.seed);
}

}  // namespace

void inspect_spectra(const std::vector<std::string>& paths) {
  std::vector<std::string> traces;
  for (const auto& path : paths) {
    if (!fs::exists(path)) throw Error(path, "no such file or folder");
    if (!fs::is_directory(path)) {
      traces.push_back(path);
      continue;
    }
    for (const auto& e : fs::recursive_directory_iterator(path))
      if (e.path().filename() == "trace.h5") traces.push_back(e.path().string());
  }
  struct Row {
    int64_t width;
    std::string run;
    double lr, weight_decay;
    std::map<std::string, double> sigma;
  };
  std::vector<Row> rows;
  std::set<std::string> kinds;
  for (const auto& t : traces) {
    h5::File f = h5::File::open(t, false);
    if (!h5::has_attr(f, "/", "format") || h5::get_string_attr(f, "/", "format") != "ladder-trace")
      throw Error(t, "not a ladder trace");
    Row row{h5::get_int_attr(f, "/", "width"), fs::path(t).parent_path().filename().string(),
            h5::get_double_attr(f, "/", "lr"), h5::get_double_attr(f, "/", "weight_decay"),
            last_spectra(f)};
    if (row.sigma.empty()) continue;
    for (const auto& [kind, value] : row.sigma)
      kinds.insert(kind);
    rows.push_back(row);
  }
  if (rows.empty())
    throw Error(paths.front(), "no trace with top singular values (eval.spectra_every_steps)");
  std::sort(rows.begin(), rows.end(), [](const Row& a, const Row& b) {
    return std::tie(a.width, a.lr, a.weight_decay, a.run) <
           std::tie(b.width, b.lr, b.weight_decay, b.run);
  });
  std::printf(
      "top singular value of each hidden matrix kind at the end of each run (mean over "
      "layers)\n%6s %10s %10s",
      "width", "lr", "wd");
  for (const auto& k : kinds)
    std::printf(" %11s", k.c_str());
  std::printf("  run\n");
  for (const auto& r : rows) {
    std::printf("%6lld %10.4g %10.4g", (long long)r.width, r.lr, r.weight_decay);
    for (const auto& k : kinds) {
      const auto it = r.sigma.find(k);
      if (it == r.sigma.end())
        std::printf(" %11s", "-");
      else
        std::printf(" %11.4g", it->second);
    }
    std::printf("  %s\n", r.run.c_str());
  }
}

void inspect(const std::string& path) {
  if (fs::is_directory(path)) return inspect_dataset(path);
  if (!fs::exists(path)) throw Error(path, "no such file or folder");
  h5::File f = h5::File::open(path, /*writable=*/false);
  const std::string format =
      h5::has_attr(f, "/", "format") ? h5::get_string_attr(f, "/", "format") : "";
  if (format == "ladder-checkpoint") return inspect_checkpoint(f);
  if (format == "ladder-trace") return inspect_trace(f);
  throw Error(path, "an HDF5 file, but neither a ladder checkpoint nor a trace");
}

void verify_checkpoints(const std::vector<std::string>& paths) {
  std::vector<std::string> files;
  for (const auto& path : paths) {
    if (!fs::is_directory(path)) {
      files.push_back(path);
      continue;
    }
    const auto steps = checkpoint_steps(path);
    if (steps.empty()) throw Error(path, "holds no checkpoints (checkpoints/step_*.h5)");
    for (int64_t step : steps)
      files.push_back(checkpoint_path(path, step));
  }
  std::vector<std::string> damaged;
  std::string first_problem;
  for (const auto& file : files) {
    const std::string problem = checkpoint_problem(file);
    if (problem.empty()) {
      h5::File f = h5::File::open(file, false);
      const int64_t version = h5::get_int_attr(f, "/", "version");
      std::printf("sound     %s (step %lld%s)\n", file.c_str(),
                  static_cast<long long>(h5::get_int_attr(f, "/", "step")),
                  version < 2 ? ", version 1: written before checksums, not verified"
                              : ", every tensor matches its checksum");
    } else {
      std::printf("DAMAGED   %s: %s\n", file.c_str(), problem.c_str());
      if (damaged.empty()) first_problem = problem;
      damaged.push_back(file);
    }
  }
  std::fflush(stdout);
  if (damaged.size() == 1) throw Error(damaged.front(), "damaged: " + first_problem);
  if (!damaged.empty())
    throw Error("ladder inspect --verify", std::to_string(damaged.size()) + " of " +
                                               std::to_string(files.size()) +
                                               " checkpoints are damaged");
}

}  // namespace ladder
