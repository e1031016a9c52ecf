#include "data/prep.h"

#include <gtest/gtest.h>
#include <zlib.h>

#include <filesystem>

#include "core/error.h"
#include "data/dataset.h"
#include "data/documents.h"
#include "test_util.h"

namespace ladder::data {
namespace {

using testing::TempDir;
using testing::write_file;

void write_gzip(const std::string& path, const std::string& text) {
  gzFile f = gzopen(path.c_str(), "wb");
  gzwrite(f, text.data(), static_cast<unsigned>(text.size()));
  gzclose(f);
}

// 40 documents of a few lines each, blank-line separated, with some non-ASCII text.
std::string corpus_text() {
  std::string text;
  for (int d = 0; d < 40; ++d) {
    for (int l = 0; l < 3; ++l)
      text += "Document " + std::to_string(d) + " line " + std::to_string(l) + " — café.\n";
    text += d % 2 ? "\n" : "\n  \n\n";  // one or more blank (or whitespace-only) lines
  }
  return text;
}

std::vector<std::string> read_all(DocumentStream&& docs) {
  std::vector<std::string> out;
  std::string d;
  while (docs.next(d))
    out.push_back(d);
  return out;
}

TEST(Documents, PlainAndGzipTextSplitOnBlankLines) {
  TempDir dir;
  write_file(dir.path("a.txt"), "\n\nfirst line\nsecond line\r\n\n\nnext doc\n");
  write_gzip(dir.path("b.txt.gz"), "gz doc\nmore\n\nlast doc without newline");
  const auto docs = read_all(DocumentStream(list_input_files({dir.path()})));
  ASSERT_EQ(docs.size(), 4u);
  EXPECT_EQ(docs[0], "first line\nsecond line\n");
  EXPECT_EQ(docs[1], "next doc\n");
  EXPECT_EQ(docs[2], "gz doc\nmore\n");
  EXPECT_EQ(docs[3], "last doc without newline\n");
}

TEST(Documents, JsonlTakesTheTextField) {
  TempDir dir;
  write_file(dir.path("c.jsonl"),
             "{\"text\": \"one\\nwith newline\", \"id\": 1}\n\n{\"text\": \"t\\u00e9l\\u00e9\"}\n"
             "{\"text\": \"\"}\n");
  write_gzip(dir.path("d.jsonl.gz"), "{\"body\": \"x\", \"text\": \"gz\"}\n");
  const auto docs = read_all(DocumentStream(list_input_files({dir.path()})));
  EXPECT_EQ(docs, (std::vector<std::string>{"one\nwith newline", "télé", "gz"}));
}

TEST(Documents, JsonlErrorsNameFileAndLine) {
  TempDir dir;
  write_file(dir.path("bad.jsonl"), "{\"text\": \"ok\"}\n{\"text\": 3}\n");
  DocumentStream docs({dir.path("bad.jsonl")});
  std::string d;
  EXPECT_TRUE(docs.next(d));
  try {
    docs.next(d);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()),
              dir.path("bad.jsonl") + ":2: expected a JSON object with a string field \"text\"");
  }
  write_file(dir.path("broken.jsonl"), "{\"text\": \n");
  DocumentStream broken({dir.path("broken.jsonl")});
  try {
    broken.next(d);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()).rfind(dir.path("broken.jsonl") + ":1: invalid JSON: ", 0), 0u);
  }
}

TEST(Documents, FoldersAreSortedAndSkipOtherFiles) {
  TempDir dir;
  write_file(dir.path("z/2.txt"), "two\n");
  write_file(dir.path("a/1.txt"), "one\n");
  write_file(dir.path("README.md"), "not corpus\n");
  EXPECT_EQ(list_input_files({dir.path()}),
            (std::vector<std::string>{dir.path("a/1.txt"), dir.path("z/2.txt")}));
  EXPECT_THROW(list_input_files({dir.path("missing")}), Error);
  EXPECT_THROW(list_input_files({}), Error);
}

PrepOptions options_for(const TempDir& dir) {
  PrepOptions o;
  o.inputs = {dir.path("corpus.txt")};
  o.out_dir = dir.path("out");
  o.val_fraction = 0.2;
  return o;
}

TEST(Prep, BytesDatasetHoldsEveryDocumentOnce) {
  TempDir dir;
  const std::string text = corpus_text();
  write_file(dir.path("corpus.txt"), text);
  PrepOptions o = options_for(dir);
  o.shard_tokens = 500;  // several shards per split
  const PrepReport report = run_prep(o);
  EXPECT_EQ(report.train_documents + report.val_documents, 40u);
  EXPECT_GT(report.val_documents, 0u);
  EXPECT_GT(report.train_documents, report.val_documents);

  const DatasetMeta meta = DatasetMeta::read(o.out_dir);
  EXPECT_EQ(meta.tokenizer_kind, "bytes");
  EXPECT_EQ(meta.vocab_size, 257u);
  EXPECT_GT(meta.train.shards.size(), 1u);
  // Decoding both splits gives back every document (the text minus blank separator lines).
  auto tok = load_dataset_tokenizer(o.out_dir, meta);
  std::string decoded;
  uint64_t eods = 0;
  for (const char* split : {"train", "val"}) {
    TokenDataset ds(o.out_dir, split);
    std::vector<int64_t> ids(ds.size());
    ds.copy(0, ds.size(), ids.data());
    std::vector<TokenId> t(ids.begin(), ids.end());
    for (auto id : t)
      eods += id == tok->eod_id();
    decoded += tok->decode(t);
    EXPECT_EQ(ds.size(), meta.split(split).tokens);
  }
  EXPECT_EQ(eods, 40u);
  // Every line of every document is present exactly once.
  for (int d = 0; d < 40; ++d) {
    const std::string line = "Document " + std::to_string(d) + " line 1 — café.\n";
    EXPECT_EQ(decoded.find(line), decoded.rfind(line)) << line;
    EXPECT_NE(decoded.find(line), std::string::npos) << line;
  }
  EXPECT_EQ(report.input_bytes, text.size());
}

TEST(Prep, IsDeterministicAndSplitsByContent) {
  TempDir dir;
  write_file(dir.path("corpus.txt"), corpus_text());
  PrepOptions o = options_for(dir);
  run_prep(o);
  const std::string first = testing::read_file(dir.path("out/train_000000.bin"));
  o.force = true;
  run_prep(o);
  EXPECT_EQ(testing::read_file(dir.path("out/train_000000.bin")), first);

  // The same documents in another order go to the same splits: the split hashes content.
  std::string reversed;
  std::vector<std::string> docs = read_all(DocumentStream({dir.path("corpus.txt")}));
  for (auto it = docs.rbegin(); it != docs.rend(); ++it)
    reversed += *it + "\n";
  write_file(dir.path("rev/corpus.txt"), reversed);
  PrepOptions r = o;
  r.inputs = {dir.path("rev/corpus.txt")};
  r.out_dir = dir.path("rev/out");
  const auto a = run_prep(o), b = run_prep(r);
  EXPECT_EQ(a.val_documents, b.val_documents);
  EXPECT_EQ(a.val_tokens, b.val_tokens);
}

TEST(Prep, RefusesToOverwriteWithoutForce) {
  TempDir dir;
  write_file(dir.path("corpus.txt"), corpus_text());
  PrepOptions o = options_for(dir);
  run_prep(o);
  try {
    run_prep(o);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()),
              o.out_dir + ": already holds a dataset; pass --force to replace it");
  }
}

TEST(Prep, BadOptions) {
  TempDir dir;
  write_file(dir.path("corpus.txt"), corpus_text());
  PrepOptions o = options_for(dir);
  o.tokenizer = "wordpiece";
  EXPECT_THROW(run_prep(o), Error);
  o = options_for(dir);
  o.val_fraction = 1.5;
  EXPECT_THROW(run_prep(o), Error);
  o = options_for(dir);
  o.inputs = {dir.path("nope.txt")};
  EXPECT_THROW(run_prep(o), Error);
  o = options_for(dir);
  o.val_fraction = 1e-9;  // no document is held out: an error, not an empty validation split
  EXPECT_THROW(run_prep(o), Error);
}

TEST(Prep, SentencePieceDatasetRoundTrips) {
  TempDir dir;
  std::string text;
  for (int i = 0; i < 300; ++i)
    text += "the quick brown fox " + std::to_string(i % 17) +
            " jumps over the lazy dog, naïve café\n" + (i % 10 == 9 ? "\n" : "");
  write_file(dir.path("corpus.txt"), text);
  PrepOptions o = options_for(dir);
  o.tokenizer = "sentencepiece";
  o.sp.vocab_size = 320;
  o.threads = 2;
  const auto report = run_prep(o);
  EXPECT_GT(report.bytes_per_token(), 1.5);  // merges compress the text
  const DatasetMeta meta = DatasetMeta::read(o.out_dir);
  EXPECT_EQ(meta.tokenizer_kind, "sentencepiece");
  EXPECT_TRUE(std::filesystem::exists(dir.path("out/tokenizer.model")));
  auto tok = load_dataset_tokenizer(o.out_dir, meta);
  TokenDataset ds(o.out_dir, "train");
  std::vector<int64_t> ids(ds.size());
  ds.copy(0, ds.size(), ids.data());
  const std::string decoded = tok->decode(std::vector<TokenId>(ids.begin(), ids.end()));
  EXPECT_NE(decoded.find("jumps over the lazy dog, naïve café\n"), std::string::npos);

  // Re-using the trained model gives the same tokens.
  PrepOptions again = o;
  again.sp_model = dir.path("out/tokenizer.model");
  again.out_dir = dir.path("again");
  run_prep(again);
  EXPECT_EQ(testing::read_file(dir.path("again/train_000000.bin")),
            testing::read_file(dir.path("out/train_000000.bin")));
}

// A tokenizer.json travels in the dataset; the dataset loads it back and every shard checks it.
TEST(Prep, HfTokenizerDatasetRoundTripsAndChecksItsFile) {
  TempDir dir;
  write_file(dir.path("corpus.txt"), corpus_text());
  PrepOptions o = options_for(dir);
  o.tokenizer = "hf";
  o.tokenizer_file = std::string(LADDER_SOURCE_DIR) + "/data/tokenizers/brown-bpe-4096.json";
  o.threads = 3;
  const auto report = run_prep(o);
  EXPECT_GT(report.bytes_per_token(), 1.5);  // merges compress the text
  const DatasetMeta meta = DatasetMeta::read(o.out_dir);
  EXPECT_EQ(meta.tokenizer_kind, "hf");
  EXPECT_EQ(meta.tokenizer_model, "tokenizer.json");
  EXPECT_EQ(meta.eod_token, "<|endoftext|>");
  EXPECT_EQ(meta.vocab_size, 4096u);
  EXPECT_EQ(testing::read_file(dir.path("out/tokenizer.json")),
            testing::read_file(o.tokenizer_file));
  auto tok = load_dataset_tokenizer(o.out_dir, meta);
  EXPECT_EQ(tok->eod_id(), meta.eod_id);
  std::string decoded;
  uint64_t eods = 0;
  for (const char* split : {"train", "val"}) {
    TokenDataset ds(o.out_dir, split);
    std::vector<int64_t> ids(ds.size());
    ds.copy(0, ds.size(), ids.data());
    for (const auto id : ids)
      if (static_cast<TokenId>(id) == tok->eod_id())
        ++eods;
      else
        decoded += tok->decode(std::vector<TokenId>{static_cast<TokenId>(id)});
  }
  EXPECT_EQ(eods, 40u);
  for (int d = 0; d < 40; ++d)
    EXPECT_NE(decoded.find("Document " + std::to_string(d) + " line 2 — café.\n"),
              std::string::npos);
  // Another tokenizer file in the folder is refused.
  std::string other = testing::read_file(dir.path("out/tokenizer.json"));
  other.replace(other.find("\"ignore_merges\": false"), 22, "\"ignore_merges\": true ");
  write_file(dir.path("out/tokenizer.json"), other);
  try {
    load_dataset_tokenizer(o.out_dir, meta);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("is not the one the dataset was made with"),
              std::string::npos)
        << e.what();
  }
  o.tokenizer_file.clear();
  o.force = true;
  EXPECT_THROW(run_prep(o), Error);  // --tokenizer hf needs --tokenizer-file
}

TEST(Dataset, DetectsMismatchedTokenizerAndMissingFolder) {
  TempDir dir;
  write_file(dir.path("corpus.txt"), corpus_text());
  PrepOptions o = options_for(dir);
  run_prep(o);
  EXPECT_THROW(TokenDataset(dir.path("nothing"), "train"), Error);
  // Edit the metadata to claim another tokenizer: the shards' recorded hash no longer matches.
  std::string meta = testing::read_file(dir.path("out/dataset.toml"));
  meta.replace(meta.find("bytes-v1"), 8, "bytes-v2");
  write_file(dir.path("out/dataset.toml"), meta);
  try {
    TokenDataset ds(o.out_dir, "train");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("made with a different tokenizer"), std::string::npos);
  }
}

}  // namespace
}  // namespace ladder::data
