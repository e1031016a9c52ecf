// `ladder prep`: text in, token shards out (data/dataset.h describes the folder it writes).
//
// Domains (data/documents.h) get a shard sequence each per split (data/dataset.h).
//
// Deterministic: the same inputs and options give byte-identical output. Each document goes to the
// validation split when a hash of (seed, its text) falls below val_fraction, so the split depends
// on content rather than position, and duplicated documents never straddle the two splits. A
// SentencePiece tokenizer is trained on the training split only.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "data/tokenizer.h"

namespace ladder::data {

struct PrepOptions {
  std::vector<std::string> inputs;
  std::string out_dir;
  std::string tokenizer = "bytes";  // "bytes" | "sentencepiece" | "hf"
  std::string sp_model;             // an existing .model to load instead of training one
  std::string tokenizer_file;       // hf: the tokenizer.json to encode with
  std::string eod_token;            // hf: the token that ends a document (default: see HfTokenizer)
  SentencePieceTrainingOptions sp;
  std::string jsonl_field = "text";
  std::string domain_field;  // a JSONL field naming each document's domain ("" = none)
  double val_fraction = 0.02;
  uint64_t seed = 0;
  uint64_t shard_tokens = uint64_t{1} << 28;  // a shard closes after the document that crosses this
  int threads = 2;
  bool force = false;  // replace an existing dataset in out_dir
};

struct PrepReport {
  uint64_t input_bytes = 0;
  uint64_t train_documents = 0, val_documents = 0;
  uint64_t train_tokens = 0, val_tokens = 0;
  uint32_t vocab_size = 0;
  std::vector<std::string> domains;  // empty: the dataset has none
  double tokenizer_seconds = 0;      // SentencePiece training
  double encode_seconds = 0;         // reading, tokenizing and writing shards
  double seconds = 0;                // the whole run
  double bytes_per_token() const {
    return static_cast<double>(input_bytes) / static_cast<double>(train_tokens + val_tokens);
  }
};

// Validates the options (ladder::Error on any mistake), then writes the dataset.
PrepReport run_prep(const PrepOptions& options);

}  // namespace ladder::data
