// Token shards: flat files of token ids behind a 64-byte header, memory-mapped for reading so that
// every rank on a node shares one copy of the corpus in the page cache.
//
// Header (little-endian):
//   offset  size  field
//        0     8  magic "LDRTOKEN"
//        8     4  version (kShardVersion)
//       12     4  bytes per token: 2 (uint16) or 4 (uint32)
//       16     8  token count
//       24     8  document count
//       32     8  FNV-1a 64 of the tokenizer identity (data/tokenizer.h)
//       40     4  vocabulary size
//       44     4  header size in bytes (64)
//       48    16  reserved, zero
// Tokens follow at offset 64. Every document ends with the tokenizer's end-of-document id.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "data/tokenizer.h"

namespace ladder::data {

constexpr char kShardMagic[8] = {'L', 'D', 'R', 'T', 'O', 'K', 'E', 'N'};
constexpr uint32_t kShardVersion = 1;
constexpr uint32_t kShardHeaderBytes = 64;

struct ShardHeader {
  uint32_t version = kShardVersion;
  uint32_t token_bytes = 2;
  uint64_t token_count = 0;
  uint64_t document_count = 0;
  uint64_t tokenizer_hash = 0;
  uint32_t vocab_size = 0;
};

// The smallest token width that holds every id below vocab_size.
uint32_t token_bytes_for_vocab(uint32_t vocab_size);

// Streams documents into one shard. Writes to "<path>.tmp" and renames on finish(), so a shard that
// exists is always complete.
class ShardWriter {
 public:
  ShardWriter(std::string path, uint32_t vocab_size, uint64_t tokenizer_hash);
  ~ShardWriter();  // removes the temporary file if finish() was not reached
  ShardWriter(const ShardWriter&) = delete;
  ShardWriter& operator=(const ShardWriter&) = delete;

  // Appends one document's tokens (which must already end with the end-of-document id).
  void append_document(const TokenId* ids, size_t count);
  void finish();
  uint64_t token_count() const { return header_.token_count; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::string tmp_path_;
  std::FILE* file_ = nullptr;
  ShardHeader header_;
  std::vector<unsigned char> buffer_;
};

// A read-only memory map of one shard, validated on open: magic, version, token width, header size
// and that the file holds exactly the tokens its header promises. Errors name the file.
class ShardReader {
 public:
  explicit ShardReader(const std::string& path);
  ~ShardReader();
  ShardReader(ShardReader&& other) noexcept;
  ShardReader& operator=(ShardReader&&) = delete;
  ShardReader(const ShardReader&) = delete;

  const ShardHeader& header() const { return header_; }
  const std::string& path() const { return path_; }
  uint64_t size() const { return header_.token_count; }
  TokenId token(uint64_t i) const {
    return header_.token_bytes == 2 ? reinterpret_cast<const uint16_t*>(tokens_)[i]
                                    : reinterpret_cast<const uint32_t*>(tokens_)[i];
  }
  // Copies tokens [begin, begin + count) widened to int64 (LibTorch's index type).
  void copy(uint64_t begin, uint64_t count, int64_t* out) const;

 private:
  std::string path_;
  ShardHeader header_;
  void* map_ = nullptr;
  size_t map_bytes_ = 0;
  const unsigned char* tokens_ = nullptr;
};

}  // namespace ladder::data
