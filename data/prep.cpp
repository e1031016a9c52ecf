#include "data/prep.h"

#include <spdlog/spdlog.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "core/error.h"
#include "core/files.h"
#include "core/hash.h"
#include "data/dataset.h"
#include "data/documents.h"
#include "data/hf_tokenizer.h"
#include "data/shard.h"

namespace ladder::data {
namespace fs = std::filesystem;
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

bool goes_to_validation(const std::string& document, const PrepOptions& o) {
  // Top 53 bits of the hash as a uniform double in [0, 1).
  const double u = static_cast<double>(hash_words(o.seed, fnv1a64(document)) >> 11) * 0x1.0p-53;
  return u < o.val_fraction;
}

void validate(const PrepOptions& o) {
  if (o.out_dir.empty()) throw Error("--out", "an output folder is required");
  if (o.tokenizer != "bytes" && o.tokenizer != "sentencepiece" && o.tokenizer != "hf")
    throw Error("--tokenizer", "must be bytes, sentencepiece or hf; got \"" + o.tokenizer + "\"");
  if (o.tokenizer != "sentencepiece" && !o.sp_model.empty())
    throw Error("--sp-model", "only applies with --tokenizer sentencepiece");
  if (o.tokenizer == "hf" && o.tokenizer_file.empty())
    throw Error("--tokenizer-file", "--tokenizer hf needs the tokenizer.json to encode with");
  if (o.tokenizer != "hf" && !o.tokenizer_file.empty())
    throw Error("--tokenizer-file", "only applies with --tokenizer hf");
  if (o.tokenizer != "hf" && !o.eod_token.empty())
    throw Error("--eod-token", "only applies with --tokenizer hf");
  if (!(o.val_fraction >= 0 && o.val_fraction < 1))
    throw Error("--val-fraction", "must be in [0, 1); got " + std::to_string(o.val_fraction));
  if (o.shard_tokens < 1) throw Error("--shard-tokens", "must be at least 1");
  if (o.threads < 1) throw Error("--threads", "must be at least 1");
  check_output_folder(o.out_dir);
  if (fs::exists(fs::path(o.out_dir) / "dataset.toml") && !o.force)
    throw Error(o.out_dir, "already holds a dataset; pass --force to replace it");
}

// Feeds SentencePiece the lines of the training documents.
std::string train_tokenizer(const PrepOptions& o, const std::vector<std::string>& files) {
  DocumentStream docs(files, o.jsonl_field);
  std::string document;
  size_t pos = 0;
  bool have = false;
  uint64_t sentences = 0;
  auto next_sentence = [&](std::string& sentence) {
    for (;;) {
      if (!have || pos >= document.size()) {
        do {
          if (!docs.next(document)) return false;
        } while (goes_to_validation(document, o));
        have = true;
        pos = 0;
      }
      size_t nl = document.find('\n', pos);
      if (nl == std::string::npos) nl = document.size();
      sentence.assign(document, pos, nl - pos);
      pos = nl + 1;
      if (!sentence.empty()) {
        ++sentences;
        return true;
      }
    }
  };
  std::string model = train_sentencepiece(o.sp, next_sentence);
  spdlog::info("prep: trained a {} SentencePiece model of {} pieces on {} training lines",
               o.sp.model_type, o.sp.vocab_size, sentences);
  return model;
}

// One split's shard sequence: train_000000.bin, train_000001.bin, ...
class SplitWriter {
 public:
  SplitWriter(const PrepOptions& o, std::string split, const Tokenizer& tok)
      : o_(o), split_(std::move(split)), tok_(tok), hash_(fnv1a64(tok.identity())) {}

  void append(const std::vector<TokenId>& ids) {
    if (!shard_) open();
    shard_->append_document(ids.data(), ids.size());
    meta_.tokens += ids.size();
    meta_.documents += 1;
    if (shard_->token_count() >= o_.shard_tokens) close();
  }
  SplitMeta finish() {
    close();
    return meta_;
  }

 private:
  void open() {
    char name[64];
    std::snprintf(name, sizeof name, "%s_%06zu.bin", split_.c_str(), meta_.shards.size());
    meta_.shards.push_back(name);
    shard_ = std::make_unique<ShardWriter>((fs::path(o_.out_dir) / name).string(),
                                           tok_.vocab_size(), hash_);
  }
  void close() {
    if (shard_) shard_->finish();
    shard_.reset();
  }

  const PrepOptions& o_;
  std::string split_;
  const Tokenizer& tok_;
  uint64_t hash_;
  std::unique_ptr<ShardWriter> shard_;
  SplitMeta meta_;
};

// Removes shards of an earlier dataset in the folder that the new one does not list.
void remove_stale_shards(const std::string& dir, const DatasetMeta& meta) {
  std::vector<std::string> keep = meta.train.shards;
  keep.insert(keep.end(), meta.val.shards.begin(), meta.val.shards.end());
  for (const auto& entry : fs::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    const bool shard = name.size() > 4 && name.compare(name.size() - 4, 4, ".bin") == 0 &&
                       (name.rfind("train_", 0) == 0 || name.rfind("val_", 0) == 0);
    if (shard && std::find(keep.begin(), keep.end(), name) == keep.end()) fs::remove(entry.path());
  }
}

}  // namespace

PrepReport run_prep(const PrepOptions& o) {
  validate(o);
  const auto start = Clock::now();
  const std::vector<std::string> files = list_input_files(o.inputs);
  create_output_folder(o.out_dir);
  PrepReport report;

  // 1. The tokenizer.
  std::unique_ptr<Tokenizer> tok;
  DatasetMeta meta;
  if (o.tokenizer == "bytes") {
    tok = std::make_unique<BytesTokenizer>();
  } else if (o.tokenizer == "hf") {
    auto hf = HfTokenizer::load(o.tokenizer_file, o.eod_token);
    meta.tokenizer_model = "tokenizer.json";
    meta.eod_token = hf->eod_token();
    write_text_file((fs::path(o.out_dir) / meta.tokenizer_model).string(), hf->file_text());
    spdlog::info("prep: {}: byte-level BPE of {} tokens, documents end with {} (id {})",
                 o.tokenizer_file, hf->vocab_size(), hf->eod_token(), hf->eod_id());
    tok = std::move(hf);
  } else {
    std::string model_bytes;
    if (!o.sp_model.empty()) {
      auto loaded = SentencePieceTokenizer::load(o.sp_model);
      model_bytes = loaded->model_bytes();
    } else {
      const auto t = Clock::now();
      model_bytes = train_tokenizer(o, files);
      report.tokenizer_seconds = seconds_since(t);
    }
    tok = std::make_unique<SentencePieceTokenizer>(model_bytes, "tokenizer.model");
    meta.tokenizer_model = "tokenizer.model";
    write_text_file((fs::path(o.out_dir) / meta.tokenizer_model).string(), model_bytes);
  }
  meta.tokenizer_kind = tok->kind();
  meta.tokenizer_identity = tok->identity();
  meta.vocab_size = tok->vocab_size();
  meta.eod_id = tok->eod_id();
  report.vocab_size = tok->vocab_size();

  // 2. Tokenize in batches: documents are encoded by `threads` workers, then written in input
  // order.
  DocumentStream docs(files, o.jsonl_field);
  SplitWriter train(o, "train", *tok), val(o, "val", *tok);
  std::vector<std::string> batch;
  std::vector<std::vector<TokenId>> encoded;
  const auto encode_start = Clock::now();
  auto last_report = encode_start;
  uint64_t documents = 0, tokens = 0;
  const size_t batch_bytes = size_t{16} << 20;
  for (bool more = true; more;) {
    batch.clear();
    size_t bytes = 0;
    std::string document;
    while (bytes < batch_bytes && (more = docs.next(document))) {
      bytes += document.size();
      batch.push_back(std::move(document));
    }
    encoded.assign(batch.size(), {});
    auto encode_range = [&](size_t begin, size_t end) {
      for (size_t i = begin; i < end; ++i) {
        tok->encode(batch[i], encoded[i]);
        encoded[i].push_back(tok->eod_id());
      }
    };
    std::vector<std::thread> workers;
    const size_t per = (batch.size() + o.threads - 1) / o.threads;
    for (int w = 1; w < o.threads && w * per < batch.size(); ++w)
      workers.emplace_back(encode_range, w * per, std::min(batch.size(), (w + 1) * per));
    encode_range(0, std::min(batch.size(), per));
    for (auto& w : workers)
      w.join();
    for (size_t i = 0; i < batch.size(); ++i) {
      (goes_to_validation(batch[i], o) ? val : train).append(encoded[i]);
      documents += 1;
      tokens += encoded[i].size();
    }
    report.input_bytes = docs.bytes_read();
    if (seconds_since(last_report) > 5 || !more) {
      last_report = Clock::now();
      spdlog::info("prep: {:.1f} MB read, {} documents, {} tokens, {:.2f} M tokens/s",
                   report.input_bytes / 1e6, documents, tokens,
                   tokens / 1e6 / seconds_since(encode_start));
    }
  }
  meta.train = train.finish();
  report.encode_seconds = seconds_since(encode_start);
  meta.val = val.finish();
  report.train_documents = meta.train.documents;
  report.val_documents = meta.val.documents;
  report.train_tokens = meta.train.tokens;
  report.val_tokens = meta.val.tokens;
  if (meta.train.documents == 0) throw Error(o.out_dir, "no training documents (empty input?)");
  if (o.val_fraction > 0 && meta.val.documents == 0)
    throw Error("--val-fraction", "no document fell into the validation split; raise it above " +
                                      std::to_string(o.val_fraction));

  // 3. Metadata last: a folder without a complete dataset.toml is not a dataset.
  meta.inputs = files;
  meta.val_fraction = o.val_fraction;
  meta.seed = o.seed;
  meta.input_bytes = report.input_bytes;
  meta.write(o.out_dir);
  remove_stale_shards(o.out_dir, meta);
  report.seconds = seconds_since(start);
  return report;
}

}  // namespace ladder::data
