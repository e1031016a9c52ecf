// A trained model outside the training loop: the recipe a checkpoint was trained with, and its
// model rebuilt whole in one process on the CPU for `ladder sample` and `ladder export`.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "data/tokenizer.h"
#include "models/model.h"
#include "trainer/recipe/recipe.h"

namespace ladder {

// The recipe stored in the checkpoint at `path`, resolved for one process on the CPU (its parallel
// layout, which a checkpoint does not depend on, reset to a single rank). ladder::Error for a file
// that is not a sound checkpoint.
Recipe checkpoint_recipe(const std::string& path);

struct TrainedModel {
  Recipe recipe;
  int64_t vocab_size = 0;
  std::unique_ptr<models::Model> model;  // every parameter loaded, fp32, CPU
};

// The checkpoint's model with its trained parameters (the global model of a DiLoCo run), built for
// sequences of up to max(its recipe's data.seq_len, `max_positions`) tokens. `recipe`: its
// checkpoint_recipe() when the caller has it already (the checkpoint is verified once).
TrainedModel load_trained_model(const std::string& path, int64_t max_positions = 0);
TrainedModel load_trained_model(const std::string& path, const Recipe& recipe,
                                int64_t max_positions = 0);

// The tokenizer of the dataset the recipe trained on: `data_dir`, or the recipe's data.path when
// empty. ladder::Error naming the folder when it is not there.
std::unique_ptr<data::Tokenizer> recipe_tokenizer(const Recipe& recipe,
                                                  const std::string& data_dir = "");

// `ladder sample`: text generation from a checkpoint. The prompt follows an end-of-document token
// (a new document, as in training); each new token is drawn from softmax(logits / temperature)
// over the top_k most likely (0: all; temperature 0: the most likely), with a generator seeded by
// `seed`, so a seed gives the same text every time. The model decodes with its cache
// (models/model.h DecodeCache): attention keys and values, Mamba-2 states.
struct SampleOptions {
  std::string checkpoint;
  std::string prompt;
  int64_t tokens = 200;  // at most this many new tokens (fewer at an end of document)
  double temperature = 1.0;
  int64_t top_k = 0;
  uint64_t seed = 0;
  std::string data;  // the dataset folder for the tokenizer; "": the recipe's data.path
  int threads = 0;   // LibTorch threads; 0: the machine's cores
};

struct SampleResult {
  std::string text;       // the continuation (without the prompt)
  int64_t generated = 0;  // new tokens
  bool ended = false;     // stopped at an end-of-document token
  double seconds = 0;     // decoding, prompt included
};

SampleResult sample(const SampleOptions& options);

}  // namespace ladder
