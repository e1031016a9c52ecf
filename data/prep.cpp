#include "data/prep.h"

#include <spdlog/spdlog.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <future>
#include <thread>

#include "core/error.h"
#include "core/files.h"
#include "core/format.h"
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
std::string train_tokenizer(const PrepOptions& o, const std::vector<InputFile>& files) {
  DocumentStream docs(files, o.jsonl_field, o.domain_field);
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

// One shard sequence: train_000000.bin, ... (or train-<domain>_000000.bin, ... for a domain).
class ShardSequenceWriter {
 public:
  ShardSequenceWriter(const PrepOptions& o, const std::string& dir, std::string prefix,
                      const Tokenizer& tok)
      : o_(o), dir_(dir), prefix_(std::move(prefix)), tok_(tok), hash_(fnv1a64(tok.identity())) {}

  void append(const std::vector<TokenId>& ids) {
    if (!shard_) open();
    shard_->append_document(ids.data(), ids.size());
    list_.tokens += ids.size();
    list_.documents += 1;
    if (shard_->token_count() >= o_.shard_tokens) close();
  }
  ShardList finish() {
    close();
    return list_;
  }

 private:
  void open() {
    char number[16];
    std::snprintf(number, sizeof number, "_%06zu.bin", list_.shards.size());
    list_.shards.push_back(prefix_ + number);
    shard_ = std::make_unique<ShardWriter>((fs::path(dir_) / list_.shards.back()).string(),
                                           tok_.vocab_size(), hash_);
  }
  void close() {
    if (shard_) shard_->finish();
    shard_.reset();
  }

  const PrepOptions& o_;
  std::string dir_;
  std::string prefix_;
  const Tokenizer& tok_;
  uint64_t hash_;
  std::unique_ptr<ShardWriter> shard_;
  ShardList list_;
};

// The shard sequences of both splits, one per domain (a single unnamed one without domains).
class DatasetWriter {
 public:
  DatasetWriter(const PrepOptions& o, std::string dir, const Tokenizer& tok)
      : o_(o), dir_(std::move(dir)), tok_(tok) {}

  // `where` names the document's file for the error a mix of named and unnamed documents gets.
  void append(const Document& d, const std::vector<TokenId>& ids, const std::string& where) {
    if (domains_.empty()) {
      named_ = !d.domain.empty();
    } else if (named_ != !d.domain.empty()) {
      throw Error(where, named_ ? "a document without a domain, after documents with domains "
                                  "(every document needs one: DOMAIN=PATH, --domain-field or "
                                  "a .domains file)"
                                : "a document of domain \"" + d.domain +
                                      "\" after documents without one (every document needs one, "
                                      "or none)");
    }
    auto it = std::find_if(domains_.begin(), domains_.end(),
                           [&](const auto& e) { return e.name == d.domain; });
    if (it == domains_.end()) {
      const std::string suffix = d.domain.empty() ? "" : "-" + d.domain;
      domains_.push_back({d.domain,
                          std::make_unique<ShardSequenceWriter>(o_, dir_, "train" + suffix, tok_),
                          std::make_unique<ShardSequenceWriter>(o_, dir_, "val" + suffix, tok_)});
      it = domains_.end() - 1;
    }
    (goes_to_validation(d.text, o_) ? *it->val : *it->train).append(ids);
  }

  // Fills the splits and domains of `meta`.
  void finish(DatasetMeta& meta) {
    for (auto& d : domains_) {
      const ShardList train = d.train->finish(), val = d.val->finish();
      for (auto [split, list] : {std::pair{&meta.train, &train}, std::pair{&meta.val, &val}}) {
        split->tokens += list->tokens;
        split->documents += list->documents;
        split->shards.insert(split->shards.end(), list->shards.begin(), list->shards.end());
        if (named_) split->domains.emplace_back(d.name, *list);
      }
      if (named_) meta.domains.push_back(d.name);
    }
  }

 private:
  struct Domain {
    std::string name;
    std::unique_ptr<ShardSequenceWriter> train, val;
  };
  const PrepOptions& o_;
  std::string dir_;
  const Tokenizer& tok_;
  std::vector<Domain> domains_;  // in the order their first documents came
  bool named_ = false;
};

bool is_shard_name(const std::string& name) {
  return name.size() > 4 && name.compare(name.size() - 4, 4, ".bin") == 0 &&
         (name.rfind("train_", 0) == 0 || name.rfind("val_", 0) == 0 ||
          name.rfind("train-", 0) == 0 || name.rfind("val-", 0) == 0);
}

// Moves the dataset built in `staging` into `out`: first the old dataset.toml goes (from then on
// the folder is not a dataset), then the old shards and tokenizer files, then the new files move
// in, and the new dataset.toml is written last. An interrupted prep leaves either the old dataset,
// no dataset, or the new one, never a mix; the next run clears the staging folder.
void commit_dataset(const std::string& staging, const std::string& out, const DatasetMeta& meta) {
  const fs::path dir(out);
  fs::remove(dir / "dataset.toml");
  for (const auto& entry : fs::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    if (entry.is_regular_file() &&
        (is_shard_name(name) || name == "tokenizer.model" || name == "tokenizer.json"))
      fs::remove(entry.path());
  }
  for (const auto& entry : fs::directory_iterator(staging))
    fs::rename(entry.path(), dir / entry.path().filename());
  fs::remove(staging);
  meta.write(out);
}

}  // namespace

PrepReport run_prep(const PrepOptions& o) {
  validate(o);
  const auto start = Clock::now();
  const std::vector<InputFile> files = list_input_files(o.inputs);
  uint64_t total_file_bytes = 0;
  for (const auto& f : files) {
    std::error_code ec;
    total_file_bytes += fs::file_size(f.path, ec);
  }
  create_output_folder(o.out_dir);
  // Everything is written into a staging folder first (cleared of an interrupted run's files).
  const std::string staging = (fs::path(o.out_dir) / ".prep-partial").string();
  fs::remove_all(staging);
  create_output_folder(staging);
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
    write_text_file((fs::path(staging) / meta.tokenizer_model).string(), hf->file_text());
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
    write_text_file((fs::path(staging) / meta.tokenizer_model).string(), model_bytes);
  }
  meta.tokenizer_kind = tok->kind();
  meta.tokenizer_identity = tok->identity();
  meta.vocab_size = tok->vocab_size();
  meta.eod_id = tok->eod_id();
  report.vocab_size = tok->vocab_size();

  // 2. Tokenize in batches of about 16 MB: while `threads` workers encode one batch, the next is
  // read (and decompressed) ahead; encoded documents are written in input order.
  DocumentStream docs(files, o.jsonl_field, o.domain_field);
  DatasetWriter writer(o, staging, *tok);
  struct Batch {
    std::vector<Document> documents;
    std::vector<std::string> files;  // each document's file, for errors
    bool last = false;
  };
  auto read_batch = [&docs]() {
    Batch b;
    size_t bytes = 0;
    Document d;
    while (bytes < (size_t{16} << 20)) {
      if (!docs.next(d)) {
        b.last = true;
        break;
      }
      bytes += d.text.size();
      b.files.push_back(docs.current_file());
      b.documents.push_back(std::move(d));
    }
    return b;
  };
  std::vector<std::vector<TokenId>> encoded;
  const auto encode_start = Clock::now();
  auto last_report = encode_start;
  uint64_t documents = 0, tokens = 0;
  Batch batch = read_batch();
  for (bool more = true; more;) {
    more = !batch.last;
    std::future<Batch> ahead;
    if (more) ahead = std::async(std::launch::async, read_batch);
    const auto& texts = batch.documents;
    encoded.assign(texts.size(), {});
    auto encode_range = [&](size_t begin, size_t end) {
      for (size_t i = begin; i < end; ++i) {
        tok->encode(texts[i].text, encoded[i]);
        encoded[i].push_back(tok->eod_id());
      }
    };
    std::vector<std::thread> workers;
    const size_t per = (texts.size() + o.threads - 1) / o.threads;
    for (int w = 1; w < o.threads && w * per < texts.size(); ++w)
      workers.emplace_back(encode_range, w * per, std::min(texts.size(), (w + 1) * per));
    try {
      encode_range(0, std::min(texts.size(), per));
    } catch (...) {
      for (auto& w : workers)
        w.join();
      throw;
    }
    for (auto& w : workers)
      w.join();
    for (size_t i = 0; i < texts.size(); ++i) {
      writer.append(texts[i], encoded[i], batch.files[i]);
      documents += 1;
      tokens += encoded[i].size();
    }
    if (more) batch = ahead.get();
    report.input_bytes = docs.bytes_read();
    if (seconds_since(last_report) > 5 || !more) {
      last_report = Clock::now();
      const double elapsed = seconds_since(encode_start);
      const double done = total_file_bytes ? static_cast<double>(docs.file_bytes_read()) /
                                                 static_cast<double>(total_file_bytes)
                                           : 1.0;
      spdlog::info(
          "prep: {:.1f}% of {:.1f} MB, {} documents, {:.1f} MB of text, {} tokens, "
          "{:.2f} M tokens/s, ETA {}",
          100 * std::min(done, 1.0), total_file_bytes / 1e6, documents, report.input_bytes / 1e6,
          tokens, tokens / 1e6 / elapsed,
          more && done > 0 ? format_duration(elapsed * (1 - done) / done) : format_duration(0));
    }
  }
  writer.finish(meta);
  report.encode_seconds = seconds_since(encode_start);
  report.train_documents = meta.train.documents;
  report.val_documents = meta.val.documents;
  report.train_tokens = meta.train.tokens;
  report.val_tokens = meta.val.tokens;
  report.domains = meta.domains;
  if (meta.train.documents == 0) throw Error(o.out_dir, "no training documents (empty input?)");
  if (o.val_fraction > 0 && meta.val.documents == 0)
    throw Error("--val-fraction", "no document fell into the validation split; raise it above " +
                                      std::to_string(o.val_fraction));

  // 3. Into place, metadata last: a folder without a complete dataset.toml is not a dataset.
  for (const auto& f : files)
    meta.inputs.push_back(f.domain.empty() ? f.path : f.domain + "=" + f.path);
  meta.val_fraction = o.val_fraction;
  meta.seed = o.seed;
  meta.input_bytes = report.input_bytes;
  commit_dataset(staging, o.out_dir, meta);
  report.seconds = seconds_since(start);
  return report;
}

}  // namespace ladder::data
