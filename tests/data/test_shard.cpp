#include "data/shard.h"

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>

#include "core/error.h"
#include "test_util.h"

namespace ladder::data {
namespace {

using testing::TempDir;

std::string error_of(const std::string& path) {
  try {
    ShardReader reader(path);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// Writes a shard of two documents and returns its bytes.
std::string make_shard(const std::string& path, uint32_t vocab) {
  ShardWriter w(path, vocab, /*tokenizer_hash=*/0x1234);
  std::vector<TokenId> a = {1, 2, 3, vocab - 1}, b = {vocab - 2, 0, vocab - 1};
  w.append_document(a.data(), a.size());
  w.append_document(b.data(), b.size());
  w.finish();
  return testing::read_file(path);
}

TEST(Shard, RoundTripsUint16AndUint32) {
  TempDir dir;
  for (uint32_t vocab : {257u, 70000u}) {
    const std::string path = dir.path("s" + std::to_string(vocab) + ".bin");
    const std::string bytes = make_shard(path, vocab);
    ShardReader r(path);
    EXPECT_EQ(r.header().token_bytes, vocab <= 65536 ? 2u : 4u);
    EXPECT_EQ(r.size(), 7u);
    EXPECT_EQ(r.header().document_count, 2u);
    EXPECT_EQ(r.header().tokenizer_hash, 0x1234u);
    EXPECT_EQ(r.header().vocab_size, vocab);
    EXPECT_EQ(bytes.size(), kShardHeaderBytes + 7 * r.header().token_bytes);
    std::vector<int64_t> out(7);
    r.copy(0, 7, out.data());
    EXPECT_EQ(out, (std::vector<int64_t>{1, 2, 3, vocab - 1, vocab - 2, 0, vocab - 1}));
    EXPECT_EQ(r.token(4), vocab - 2);
    EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
  }
}

TEST(Shard, UnfinishedWriterLeavesNoFile) {
  TempDir dir;
  {
    ShardWriter w(dir.path("x.bin"), 257, 0);
    std::vector<TokenId> a = {1, 2};
    w.append_document(a.data(), a.size());
  }  // no finish(): e.g. an exception while tokenizing
  EXPECT_FALSE(std::filesystem::exists(dir.path("x.bin")));
  EXPECT_FALSE(std::filesystem::exists(dir.path("x.bin.tmp")));
}

TEST(Shard, WriterRejectsIdsOutsideTheVocabulary) {
  TempDir dir;
  ShardWriter w(dir.path("x.bin"), 257, 0);
  std::vector<TokenId> bad = {1, 257};
  EXPECT_THROW(w.append_document(bad.data(), bad.size()), Error);
}

TEST(Shard, BadMagic) {
  TempDir dir;
  std::string bytes = make_shard(dir.path("a.bin"), 257);
  bytes[0] = 'X';
  testing::write_file(dir.path("a.bin"), bytes);
  EXPECT_EQ(error_of(dir.path("a.bin")),
            dir.path("a.bin") + ": not a ladder token shard (bad magic)");
}

TEST(Shard, WrongVersion) {
  TempDir dir;
  std::string bytes = make_shard(dir.path("a.bin"), 257);
  bytes[8] = 7;
  testing::write_file(dir.path("a.bin"), bytes);
  EXPECT_EQ(error_of(dir.path("a.bin")),
            dir.path("a.bin") + ": unsupported token shard version 7 (this build reads version 1)");
}

TEST(Shard, BadTokenWidth) {
  TempDir dir;
  std::string bytes = make_shard(dir.path("a.bin"), 257);
  bytes[12] = 3;
  testing::write_file(dir.path("a.bin"), bytes);
  EXPECT_EQ(error_of(dir.path("a.bin")),
            dir.path("a.bin") + ": corrupt token shard: token width 3 bytes (expected 2 or 4)");
}

TEST(Shard, TruncatedPayload) {
  TempDir dir;
  std::string bytes = make_shard(dir.path("a.bin"), 257);
  testing::write_file(dir.path("a.bin"), bytes.substr(0, bytes.size() - 3));
  EXPECT_EQ(error_of(dir.path("a.bin")),
            dir.path("a.bin") +
                ": truncated or corrupt token shard: the header promises 7 tokens "
                "(14 bytes) but the file holds 11 bytes of tokens");
}

TEST(Shard, TruncatedHeaderAndEmptyFile) {
  TempDir dir;
  testing::write_file(dir.path("a.bin"), make_shard(dir.path("a.bin"), 257).substr(0, 20));
  EXPECT_EQ(error_of(dir.path("a.bin")),
            dir.path("a.bin") +
                ": not a ladder token shard: 20 bytes is shorter than the 64-byte "
                "header (truncated?)");
  testing::write_file(dir.path("empty.bin"), "");
  EXPECT_NE(error_of(dir.path("empty.bin")).find("shorter than the 64-byte header"),
            std::string::npos);
}

TEST(Shard, HugeTokenCountDoesNotOverflow) {
  TempDir dir;
  std::string bytes = make_shard(dir.path("a.bin"), 257);
  for (int i = 16; i < 24; ++i)
    bytes[i] = '\xff';  // token count 2^64 - 1
  testing::write_file(dir.path("a.bin"), bytes);
  EXPECT_NE(error_of(dir.path("a.bin")).find("truncated or corrupt token shard"),
            std::string::npos);
}

TEST(Shard, MissingFile) {
  EXPECT_EQ(
      error_of("/nonexistent/a.bin").rfind("/nonexistent/a.bin: cannot open token shard: ", 0), 0u);
}

}  // namespace
}  // namespace ladder::data
