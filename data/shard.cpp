#include "data/shard.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "core/error.h"

namespace ladder::data {
namespace {

// The header is written field by field in little-endian order, independent of struct layout.
void put_u16(unsigned char* p, uint16_t v) {
  p[0] = static_cast<unsigned char>(v);
  p[1] = static_cast<unsigned char>(v >> 8);
}
void put_u32(unsigned char* p, uint32_t v) {
  for (int i = 0; i < 4; ++i)
    p[i] = static_cast<unsigned char>(v >> (8 * i));
}
void put_u64(unsigned char* p, uint64_t v) {
  for (int i = 0; i < 8; ++i)
    p[i] = static_cast<unsigned char>(v >> (8 * i));
}
uint32_t get_u32(const unsigned char* p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i)
    v |= static_cast<uint32_t>(p[i]) << (8 * i);
  return v;
}
uint64_t get_u64(const unsigned char* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i)
    v |= static_cast<uint64_t>(p[i]) << (8 * i);
  return v;
}

void encode_header(const ShardHeader& h, unsigned char* out) {
  std::memset(out, 0, kShardHeaderBytes);
  std::memcpy(out, kShardMagic, 8);
  put_u32(out + 8, h.version);
  put_u32(out + 12, h.token_bytes);
  put_u64(out + 16, h.token_count);
  put_u64(out + 24, h.document_count);
  put_u64(out + 32, h.tokenizer_hash);
  put_u32(out + 40, h.vocab_size);
  put_u32(out + 44, kShardHeaderBytes);
}

std::string errno_text() {
  return std::strerror(errno);
}

}  // namespace

uint32_t token_bytes_for_vocab(uint32_t vocab_size) {
  return vocab_size <= 65536 ? 2 : 4;
}

ShardWriter::ShardWriter(std::string path, uint32_t vocab_size, uint64_t tokenizer_hash)
    : path_(std::move(path)), tmp_path_(path_ + ".tmp") {
  header_.token_bytes = token_bytes_for_vocab(vocab_size);
  header_.vocab_size = vocab_size;
  header_.tokenizer_hash = tokenizer_hash;
  file_ = std::fopen(tmp_path_.c_str(), "wb");
  if (!file_) throw Error(tmp_path_, "cannot create shard: " + errno_text());
  unsigned char header[kShardHeaderBytes];
  encode_header(header_, header);  // rewritten with the final counts by finish()
  if (std::fwrite(header, 1, sizeof header, file_) != sizeof header)
    throw Error(tmp_path_, "write failed: " + errno_text());
}

ShardWriter::~ShardWriter() {
  if (file_) {
    std::fclose(file_);
    std::remove(tmp_path_.c_str());
  }
}

void ShardWriter::append_document(const TokenId* ids, size_t count) {
  const uint32_t width = header_.token_bytes;
  buffer_.resize(count * width);
  for (size_t i = 0; i < count; ++i) {
    if (ids[i] >= header_.vocab_size)
      throw Error(tmp_path_, "token id " + std::to_string(ids[i]) + " is outside the vocabulary (" +
                                 std::to_string(header_.vocab_size) + ")");
    if (width == 2)
      put_u16(buffer_.data() + 2 * i, static_cast<uint16_t>(ids[i]));
    else
      put_u32(buffer_.data() + 4 * i, ids[i]);
  }
  if (std::fwrite(buffer_.data(), 1, buffer_.size(), file_) != buffer_.size())
    throw Error(tmp_path_, "write failed: " + errno_text());
  header_.token_count += count;
  header_.document_count += 1;
}

void ShardWriter::finish() {
  unsigned char header[kShardHeaderBytes];
  encode_header(header_, header);
  bool ok = std::fseek(file_, 0, SEEK_SET) == 0 &&
            std::fwrite(header, 1, sizeof header, file_) == sizeof header &&
            std::fflush(file_) == 0 && fsync(fileno(file_)) == 0;
  ok = (std::fclose(file_) == 0) && ok;
  file_ = nullptr;
  if (!ok || std::rename(tmp_path_.c_str(), path_.c_str()) != 0) {
    std::remove(tmp_path_.c_str());
    throw Error(path_, "cannot write shard: " + errno_text());
  }
}

// Readers view the token array in place, which assumes a little-endian host (x86-64, AArch64).
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "token shards are little-endian");

ShardReader::ShardReader(const std::string& path) : path_(path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error(path, "cannot open token shard: " + errno_text());
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    throw Error(path, "cannot stat token shard: " + errno_text());
  }
  const uint64_t file_bytes = static_cast<uint64_t>(st.st_size);
  if (file_bytes < kShardHeaderBytes) {
    ::close(fd);
    throw Error(path, "not a ladder token shard: " + std::to_string(file_bytes) +
                          " bytes is shorter than the " + std::to_string(kShardHeaderBytes) +
                          "-byte header (truncated?)");
  }
  map_bytes_ = static_cast<size_t>(file_bytes);
  map_ = ::mmap(nullptr, map_bytes_, PROT_READ, MAP_SHARED, fd, 0);
  ::close(fd);  // the mapping keeps the file alive
  if (map_ == MAP_FAILED) {
    map_ = nullptr;
    throw Error(path, "cannot memory-map token shard: " + errno_text());
  }
  auto fail = [&](const std::string& what) {
    ::munmap(map_, map_bytes_);
    map_ = nullptr;
    throw Error(path, what);
  };
  const auto* p = static_cast<const unsigned char*>(map_);
  if (std::memcmp(p, kShardMagic, 8) != 0) fail("not a ladder token shard (bad magic)");
  header_.version = get_u32(p + 8);
  if (header_.version != kShardVersion)
    fail("unsupported token shard version " + std::to_string(header_.version) +
         " (this build reads version " + std::to_string(kShardVersion) + ")");
  header_.token_bytes = get_u32(p + 12);
  if (header_.token_bytes != 2 && header_.token_bytes != 4)
    fail("corrupt token shard: token width " + std::to_string(header_.token_bytes) +
         " bytes (expected 2 or 4)");
  header_.token_count = get_u64(p + 16);
  header_.document_count = get_u64(p + 24);
  header_.tokenizer_hash = get_u64(p + 32);
  header_.vocab_size = get_u32(p + 40);
  if (get_u32(p + 44) != kShardHeaderBytes)
    fail("corrupt token shard: header size " + std::to_string(get_u32(p + 44)) + " (expected " +
         std::to_string(kShardHeaderBytes) + ")");
  const uint64_t payload = file_bytes - kShardHeaderBytes;
  if (header_.token_count > payload / header_.token_bytes ||
      payload != header_.token_count * header_.token_bytes)
    fail("truncated or corrupt token shard: the header promises " +
         std::to_string(header_.token_count) + " tokens (" +
         std::to_string(header_.token_count * header_.token_bytes) + " bytes) but the file holds " +
         std::to_string(payload) + " bytes of tokens");
  tokens_ = p + kShardHeaderBytes;
  // Windows are read at random offsets; tell the kernel not to read ahead a whole shard.
  ::madvise(map_, map_bytes_, MADV_RANDOM);
}

ShardReader::~ShardReader() {
  if (map_) ::munmap(map_, map_bytes_);
}

ShardReader::ShardReader(ShardReader&& other) noexcept
    : path_(std::move(other.path_)),
      header_(other.header_),
      map_(other.map_),
      map_bytes_(other.map_bytes_),
      tokens_(other.tokens_) {
  other.map_ = nullptr;
  other.tokens_ = nullptr;
}

void ShardReader::copy(uint64_t begin, uint64_t count, int64_t* out) const {
  if (header_.token_bytes == 2) {
    const auto* src = reinterpret_cast<const uint16_t*>(tokens_) + begin;
    for (uint64_t i = 0; i < count; ++i)
      out[i] = src[i];
  } else {
    const auto* src = reinterpret_cast<const uint32_t*>(tokens_) + begin;
    for (uint64_t i = 0; i < count; ++i)
      out[i] = src[i];
  }
}

}  // namespace ladder::data
