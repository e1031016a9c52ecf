#include "trainer/tools/inference.h"

#include <chrono>
#include <filesystem>
#include <thread>

#include <ATen/CPUGeneratorImpl.h>
#include <spdlog/spdlog.h>

#include "core/error.h"
#include "core/hdf5.h"
#include "data/dataset.h"
#include "trainer/run/checkpoint.h"

namespace ladder {
namespace fs = std::filesystem;

Recipe checkpoint_recipe(const std::string& path) {
  if (!fs::exists(path)) throw Error(path, "no such checkpoint");
  if (const std::string problem = checkpoint_problem(path); !problem.empty())
    throw Error(path, "damaged: " + problem);
  return checkpoint_recipe(read_checkpoint_meta(path), path);
}

TrainedModel load_trained_model(const std::string& path, int64_t max_positions) {
  return load_trained_model(path, checkpoint_recipe(path), max_positions);
}

TrainedModel load_trained_model(const std::string& path, const Recipe& recipe,
                                int64_t max_positions) {
  TrainedModel t;
  t.recipe = recipe;
  {
    h5::File f = h5::File::open(path, false);
    t.vocab_size = h5::dataset_shape(f, "params/embedding").at(0);
  }
  t.model = models::build_model(t.recipe.model, t.vocab_size,
                                std::max(t.recipe.data.seq_len, max_positions), {}, {}, {},
                                t.recipe.train.fused_kernels);
  const std::vector<std::string> missing = load_matching_params(path, t.model->params());
  if (!missing.empty())
    throw Error(path, "lacks parameter " + missing.front() + " of the model its recipe builds");
  return t;
}

std::unique_ptr<data::Tokenizer> recipe_tokenizer(const Recipe& recipe,
                                                  const std::string& data_dir) {
  const std::string dir = data_dir.empty() ? recipe.data.path : data_dir;
  if (!fs::exists(fs::path(dir) / "dataset.toml"))
    throw Error(dir,
                "no dataset here (the recipe's data.path): its tokenizer is needed; name the "
                "dataset folder with --data");
  return data::load_dataset_tokenizer(dir, data::DatasetMeta::read(dir));
}

SampleResult sample(const SampleOptions& o) {
  if (o.tokens < 0) throw Error("--tokens", "must be at least 0");
  if (o.temperature < 0) throw Error("--temperature", "must be at least 0");
  if (o.top_k < 0) throw Error("--top-k", "must be at least 0 (0: every token)");
  torch::set_num_threads(o.threads > 0 ? o.threads
                                       : static_cast<int>(std::thread::hardware_concurrency()));
  const Recipe recipe = checkpoint_recipe(o.checkpoint);
  const auto tokenizer = recipe_tokenizer(recipe, o.data);
  std::vector<int64_t> ids = {static_cast<int64_t>(tokenizer->eod_id())};
  for (data::TokenId id : tokenizer->encode(o.prompt))
    ids.push_back(static_cast<int64_t>(id));
  const int64_t total = static_cast<int64_t>(ids.size()) + o.tokens;
  TrainedModel trained = load_trained_model(o.checkpoint, recipe, total);
  if (total > recipe.data.seq_len)
    spdlog::warn(
        "sample: {} tokens are more than the {} the model was trained on (data.seq_len): "
        "the positions past them are extrapolated",
        total, recipe.data.seq_len);

  at::Generator generator = at::detail::createCPUGenerator(o.seed);
  models::DecodeCache cache;
  SampleResult result;
  std::vector<data::TokenId> generated;
  const auto start = std::chrono::steady_clock::now();
  torch::Tensor logits = trained.model->decode(torch::tensor(ids).view({1, -1}), cache);
  for (int64_t i = 0; i < o.tokens; ++i) {
    torch::Tensor last = logits[0][-1].to(torch::kFloat64);
    int64_t next = 0;
    if (o.temperature == 0) {
      next = last.argmax().item<int64_t>();
    } else {
      last = last / o.temperature;
      if (o.top_k > 0 && o.top_k < last.size(0)) {
        const torch::Tensor kth = std::get<0>(last.topk(o.top_k)).min();
        last = last.masked_fill(last < kth, -std::numeric_limits<double>::infinity());
      }
      next = torch::multinomial(torch::softmax(last, 0), 1, false, generator).item<int64_t>();
    }
    if (next == static_cast<int64_t>(tokenizer->eod_id())) {
      result.ended = true;
      break;
    }
    generated.push_back(static_cast<data::TokenId>(next));
    ++result.generated;
    if (i + 1 < o.tokens) logits = trained.model->decode(torch::tensor({{next}}), cache);
  }
  result.text = tokenizer->decode(generated);
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return result;
}

}  // namespace ladder
