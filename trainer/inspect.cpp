#include "trainer/inspect.h"

#include <cstdio>
#include <filesystem>

#include "core/error.h"
#include "core/hdf5.h"
#include "data/dataset.h"

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

void inspect_checkpoint(const h5::File& f) {
  std::printf("checkpoint         %s\n", f.path().c_str());
  print_attrs(f,
              {"step", "tokens", "optimizer_steps", "intermediate", "N", "total_params",
               "embedding_params", "active_params", "seed"},
              {"lr", "flops_per_token"}, {"arch"});
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
              {"flops_per_token", "lr", "weight_decay"}, {"arch", "parametrization"});
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
  const int64_t c = h5::series_length(f, "checkpoints/step");
  std::printf("%-18s %lld\n", "checkpoints", (long long)c);
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
  std::printf("made from          %zu input files, %.2f MB, val_fraction %.3g, seed %llu\n",
              meta.inputs.size(), meta.input_bytes / 1e6, meta.val_fraction,
              (unsigned long long)meta.seed);
}

}  // namespace

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

}  // namespace ladder
