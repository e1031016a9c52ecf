#include "data/tokenizer.h"

#include <dlfcn.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <fstream>
#include <sstream>

#include "data/module_loader.h"
#include "data/sentencepiece_module.h"

#include "core/error.h"
#include "core/hash.h"

namespace ladder::data {

void BytesTokenizer::encode(std::string_view text, std::vector<TokenId>& out) const {
  out.reserve(out.size() + text.size());
  for (unsigned char c : text)
    out.push_back(c);
}

std::string BytesTokenizer::decode(const TokenId* ids, size_t count) const {
  std::string text;
  text.reserve(count);
  for (size_t i = 0; i < count; ++i) {
    if (ids[i] < 256) text.push_back(static_cast<char>(ids[i]));
    // The end-of-document id has no text; it separates documents.
  }
  return text;
}

// ----- SentencePiece, through the module (data/sentencepiece_module.h)
// ----------------------------

namespace {

// The dlopen'ed module and its entry points, loaded once on first use.
struct SentencePieceModule {
  decltype(&ladder_sp_load) load;
  decltype(&ladder_sp_free) free;
  decltype(&ladder_sp_vocab_size) vocab_size;
  decltype(&ladder_sp_eos_id) eos_id;
  decltype(&ladder_sp_encode) encode;
  decltype(&ladder_sp_decode) decode;
  decltype(&ladder_sp_train) train;

  static const SentencePieceModule& get() {
    static const SentencePieceModule module = open();
    return module;
  }

 private:
  static SentencePieceModule open() {
    const LoadedModule lib("libladder_sentencepiece.so", "LADDER_SENTENCEPIECE_MODULE",
                           LADDER_SENTENCEPIECE_MODULE_PATH, "sentencepiece",
                           "it is built with ladder");
    SentencePieceModule m;
    m.load = lib.symbol<decltype(m.load)>("ladder_sp_load");
    m.free = lib.symbol<decltype(m.free)>("ladder_sp_free");
    m.vocab_size = lib.symbol<decltype(m.vocab_size)>("ladder_sp_vocab_size");
    m.eos_id = lib.symbol<decltype(m.eos_id)>("ladder_sp_eos_id");
    m.encode = lib.symbol<decltype(m.encode)>("ladder_sp_encode");
    m.decode = lib.symbol<decltype(m.decode)>("ladder_sp_decode");
    m.train = lib.symbol<decltype(m.train)>("ladder_sp_train");
    return m;
  }
};

}  // namespace

struct SentencePieceTokenizer::Impl {
  const SentencePieceModule& sp = SentencePieceModule::get();
  ladder_sp_model* model = nullptr;
  ~Impl() {
    if (model) sp.free(model);
  }
};

SentencePieceTokenizer::SentencePieceTokenizer(std::string model_bytes, const std::string& where)
    : impl_(std::make_unique<Impl>()), model_bytes_(std::move(model_bytes)) {
  const char* error = nullptr;
  if (impl_->sp.load(model_bytes_.data(), model_bytes_.size(), &impl_->model, &error) != 0)
    throw Error(where, std::string("not a SentencePiece model: ") + error);
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(fnv1a64(model_bytes_)));
  identity_ = std::string("sentencepiece-") + hex;
  if (impl_->sp.eos_id(impl_->model) < 0)
    throw Error(where, "the model has no </s> piece, which ladder uses as end-of-document");
}

SentencePieceTokenizer::~SentencePieceTokenizer() = default;

std::unique_ptr<SentencePieceTokenizer> SentencePieceTokenizer::load(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(path, "cannot open SentencePiece model");
  std::ostringstream bytes;
  bytes << in.rdbuf();
  return std::make_unique<SentencePieceTokenizer>(bytes.str(), path);
}

uint32_t SentencePieceTokenizer::vocab_size() const {
  return static_cast<uint32_t>(impl_->sp.vocab_size(impl_->model));
}

TokenId SentencePieceTokenizer::eod_id() const {
  return static_cast<TokenId>(impl_->sp.eos_id(impl_->model));
}

void SentencePieceTokenizer::encode(std::string_view text, std::vector<TokenId>& out) const {
  const int* ids = nullptr;
  size_t count = 0;
  const char* error = nullptr;
  if (impl_->sp.encode(impl_->model, text.data(), text.size(), &ids, &count, &error) != 0)
    throw Error("sentencepiece", std::string("encode failed: ") + error);
  out.insert(out.end(), ids, ids + count);
}

std::string SentencePieceTokenizer::decode(const TokenId* ids, size_t count) const {
  // </s> has no text, as with the bytes tokenizer: it separates documents.
  std::vector<int> piece_ids;
  piece_ids.reserve(count);
  const int eod = static_cast<int>(eod_id());
  for (size_t i = 0; i < count; ++i)
    if (static_cast<int>(ids[i]) != eod) piece_ids.push_back(static_cast<int>(ids[i]));
  const char* text = nullptr;
  size_t length = 0;
  const char* error = nullptr;
  if (impl_->sp.decode(impl_->model, piece_ids.data(), piece_ids.size(), &text, &length, &error) !=
      0)
    throw Error("sentencepiece", std::string("decode failed: ") + error);
  return std::string(text, length);
}

std::string train_sentencepiece(const SentencePieceTrainingOptions& options,
                                const std::function<bool(std::string&)>& next_sentence) {
  if (options.model_type != "bpe" && options.model_type != "unigram")
    throw Error("--sp-type", "must be bpe or unigram; got \"" + options.model_type + "\"");
  // 256 byte-fallback pieces + <unk> + </s> must fit, with room for real merges.
  if (options.vocab_size < 300)
    throw Error("--vocab-size",
                "must be at least 300 for SentencePiece (256 byte pieces, <unk>, "
                "</s> and merges); got " +
                    std::to_string(options.vocab_size));
  const std::vector<std::pair<std::string, std::string>> args = {
      {"model_type", options.model_type},
      {"vocab_size", std::to_string(options.vocab_size)},
      {"num_threads", std::to_string(options.threads)},
      {"input_sentence_size", std::to_string(options.max_sentences)},
      {"shuffle_input_sentence", "true"},
      {"character_coverage", "0.9999"},
      // Lossless on any UTF-8: unseen characters fall back to bytes, text is not normalised, no
      // whitespace is added or removed.
      {"byte_fallback", "true"},
      {"normalization_rule_name", "identity"},
      {"add_dummy_prefix", "false"},
      {"remove_extra_whitespaces", "false"},
      {"split_digits", "true"},
      {"max_sentence_length", "16384"},
      {"unk_id", "0"},
      {"eos_id", "1"},
      {"bos_id", "-1"},
      {"pad_id", "-1"},
      {"minloglevel", "2"},  // SentencePiece's own progress lines are noise next to ours
  };
  std::vector<const char*> keys, values;
  for (const auto& [k, v] : args)
    keys.push_back(k.c_str()), values.push_back(v.c_str());

  struct Context {
    const std::function<bool(std::string&)>& next;
    std::string sentence;
    std::exception_ptr failure;
  } context{next_sentence, {}, nullptr};
  // Exceptions must not unwind through SentencePiece: keep the first and end the iteration.
  auto next = [](void* p, const char** text, size_t* length) -> int {
    auto* c = static_cast<Context*>(p);
    try {
      if (!c->next(c->sentence)) return 0;
    } catch (...) {
      c->failure = std::current_exception();
      return 0;
    }
    *text = c->sentence.data();
    *length = c->sentence.size();
    return 1;
  };
  const char* model = nullptr;
  size_t model_length = 0;
  const char* error = nullptr;
  const int status = SentencePieceModule::get().train(keys.data(), values.data(), keys.size(), next,
                                                      &context, &model, &model_length, &error);
  if (context.failure) std::rethrow_exception(context.failure);
  if (status != 0) throw Error("sentencepiece", std::string("training failed: ") + error);
  return std::string(model, model_length);
}

}  // namespace ladder::data
