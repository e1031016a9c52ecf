// A prepared dataset: the folder `ladder prep` writes.
//
//   <dir>/dataset.toml        metadata: tokenizer, splits, shard list, how it was made
//   <dir>/tokenizer.model     the SentencePiece model (sentencepiece datasets only)
//   <dir>/tokenizer.json      the Hugging Face tokenizer file (hf datasets only)
//   <dir>/train_000000.bin    token shards (data/shard.h), documents in input order
//   <dir>/val_000000.bin
//
// A dataset with domains (data/documents.h) keeps one shard sequence per domain and split,
// `train-<domain>_000000.bin`, ...; dataset.toml lists the domains in the order their first
// documents came, and each split's `shards` is every domain's shards in that order.
//
// TokenDataset presents one split (all of it, or some of its domains) as a single token sequence
// over its memory-mapped shards.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "data/shard.h"
#include "data/tokenizer.h"

namespace ladder::data {

// Version 2 added domains; version 1 datasets (no domains) are still read.
constexpr int kDatasetFormatVersion = 2;

struct ShardList {
  uint64_t tokens = 0;
  uint64_t documents = 0;
  std::vector<std::string> shards;  // file names relative to the dataset folder
};

struct SplitMeta : ShardList {
  // One entry per domain of the dataset, in DatasetMeta::domains order; empty without domains.
  std::vector<std::pair<std::string, ShardList>> domains;
  // The named domain's shards; ladder::Error naming the domains there are when it is not one.
  const ShardList& domain(const std::string& name) const;
};

struct DatasetMeta {
  std::string tokenizer_kind;      // "bytes" | "sentencepiece" | "hf"
  std::string tokenizer_identity;  // Tokenizer::identity()
  std::string tokenizer_model;  // tokenizer.model (SentencePiece), tokenizer.json (hf), "" (bytes)
  std::string eod_token;        // hf: the content of the end-of-document token
  uint32_t vocab_size = 0;
  TokenId eod_id = 0;
  std::vector<std::string> domains;  // in the order their first documents came; empty: none
  SplitMeta train;
  SplitMeta val;
  // Provenance, for humans and reproducibility.
  std::vector<std::string> inputs;
  double val_fraction = 0;
  uint64_t seed = 0;
  uint64_t input_bytes = 0;

  const SplitMeta& split(const std::string& name) const;

  // Reads <dir>/dataset.toml; errors name the file and key.
  static DatasetMeta read(const std::string& dir);
  // Writes <dir>/dataset.toml atomically (temporary file, then rename).
  void write(const std::string& dir) const;
};

// The tokenizer a dataset was made with, checked against the identity recorded in its metadata.
std::unique_ptr<Tokenizer> load_dataset_tokenizer(const std::string& dir, const DatasetMeta& meta);

class TokenDataset {
 public:
  // Opens every shard of `split` ("train" | "val"), or of its `domains` only (concatenated in the
  // order given), and checks each against the metadata.
  TokenDataset(const std::string& dir, const std::string& split,
               const std::vector<std::string>& domains = {});

  const DatasetMeta& meta() const { return meta_; }
  uint64_t size() const { return total_; }
  // Copies tokens [begin, begin + count) as int64, across shard boundaries.
  void copy(uint64_t begin, uint64_t count, int64_t* out) const;

 private:
  DatasetMeta meta_;
  std::vector<ShardReader> shards_;
  std::vector<uint64_t> starts_;  // global offset of each shard's first token
  uint64_t total_ = 0;
};

}  // namespace ladder::data
