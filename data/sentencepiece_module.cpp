// The SentencePiece module: see data/sentencepiece_module.h for why this is a separate shared
// object.
#include "data/sentencepiece_module.h"

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <string>
#include <unordered_map>
#include <vector>

struct ladder_sp_model {
  sentencepiece::SentencePieceProcessor processor;
};

namespace {

thread_local std::string t_error;
thread_local std::vector<int> t_ids;
thread_local std::string t_text;
std::string g_model;  // training runs on one thread at a time

int fail(const sentencepiece::util::Status& status, const char** error) {
  t_error = status.ToString();
  *error = t_error.c_str();
  return 1;
}

class CallbackSentences final : public sentencepiece::SentenceIterator {
 public:
  CallbackSentences(ladder_sp_next_sentence_fn next, void* context)
      : next_(next), context_(context) {
    Next();
  }
  bool done() const override { return done_; }
  void Next() override {
    const char* text = nullptr;
    size_t length = 0;
    done_ = next_(context_, &text, &length) == 0;
    if (!done_) value_.assign(text, length);
  }
  const std::string& value() const override { return value_; }
  sentencepiece::util::Status status() const override { return {}; }

 private:
  ladder_sp_next_sentence_fn next_;
  void* context_;
  std::string value_;
  bool done_ = false;
};

}  // namespace

extern "C" {

int ladder_sp_load(const char* model_bytes, size_t length, ladder_sp_model** model,
                   const char** error) {
  auto m = new ladder_sp_model;
  auto status = m->processor.LoadFromSerializedProto(std::string(model_bytes, length));
  if (!status.ok()) {
    delete m;
    return fail(status, error);
  }
  *model = m;
  return 0;
}

void ladder_sp_free(ladder_sp_model* model) {
  delete model;
}

int ladder_sp_vocab_size(const ladder_sp_model* model) {
  return model->processor.GetPieceSize();
}

int ladder_sp_eos_id(const ladder_sp_model* model) {
  return model->processor.eos_id();
}

int ladder_sp_encode(const ladder_sp_model* model, const char* text, size_t length, const int** ids,
                     size_t* count, const char** error) {
  t_ids.clear();
  auto status = model->processor.Encode(absl::string_view(text, length), &t_ids);
  if (!status.ok()) return fail(status, error);
  *ids = t_ids.data();
  *count = t_ids.size();
  return 0;
}

int ladder_sp_decode(const ladder_sp_model* model, const int* ids, size_t count, const char** text,
                     size_t* length, const char** error) {
  t_text.clear();
  auto status = model->processor.Decode(std::vector<int>(ids, ids + count), &t_text);
  if (!status.ok()) return fail(status, error);
  *text = t_text.data();
  *length = t_text.size();
  return 0;
}

int ladder_sp_train(const char* const* keys, const char* const* values, size_t option_count,
                    ladder_sp_next_sentence_fn next, void* context, const char** model_bytes,
                    size_t* model_length, const char** error) {
  std::unordered_map<std::string, std::string> args;
  for (size_t i = 0; i < option_count; ++i)
    args[keys[i]] = values[i];
  CallbackSentences sentences(next, context);
  g_model.clear();
  auto status = sentencepiece::SentencePieceTrainer::Train(args, &sentences, &g_model);
  if (!status.ok()) return fail(status, error);
  *model_bytes = g_model.data();
  *model_length = g_model.size();
  return 0;
}

}  // extern "C"
