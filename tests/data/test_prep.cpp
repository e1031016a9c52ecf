#include "data/prep.h"

#include <gtest/gtest.h>
#include <zlib.h>
#include <zstd.h>

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

// `text` as zstd, in frames of `frame_bytes` (as multi-threaded compressors write it).
std::string zstd_bytes(const std::string& text, size_t frame_bytes = size_t(-1)) {
  std::string out;
  for (size_t at = 0; at < text.size() || at == 0; at += frame_bytes) {
    const size_t n = std::min(frame_bytes, text.size() - at);
    std::string frame(ZSTD_compressBound(n), '\0');
    const size_t size = ZSTD_compress(frame.data(), frame.size(), text.data() + at, n, 3);
    frame.resize(size);
    out += frame;
    if (n == 0) break;
  }
  return out;
}

// Every document of the stream: texts, or Documents with their domains.
template <class T = std::string>
std::vector<T> read_all(DocumentStream&& docs) {
  std::vector<T> out;
  T d;
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
  write_file(dir.path("m/3.jsonl.zst"), zstd_bytes("{\"text\": \"three\"}\n"));
  EXPECT_EQ(list_input_files({dir.path()}),
            (std::vector<InputFile>{dir.path("a/1.txt"), dir.path("m/3.jsonl.zst"),
                                    dir.path("z/2.txt")}));
  EXPECT_EQ(list_input_files({"news=" + dir.path("a")}),
            (std::vector<InputFile>{{dir.path("a/1.txt"), "news"}}));
  EXPECT_THROW(list_input_files({dir.path("missing")}), Error);
  EXPECT_THROW(list_input_files({"bad name=" + dir.path("a")}), Error);
  EXPECT_THROW(list_input_files({}), Error);
}

TEST(Documents, ZstdTextAndJsonlInOneOrManyFrames) {
  TempDir dir;
  const std::string text = corpus_text();
  write_file(dir.path("one.txt.zst"), zstd_bytes(text));
  write_file(dir.path("many.txt.zst"), zstd_bytes(text, 777));  // frames end mid-line
  write_file(dir.path("plain.txt"), text);
  const auto plain = read_all(DocumentStream({dir.path("plain.txt")}));
  ASSERT_EQ(plain.size(), 40u);
  EXPECT_EQ(read_all(DocumentStream({dir.path("one.txt.zst")})), plain);
  DocumentStream many({dir.path("many.txt.zst")});
  EXPECT_EQ(read_all(std::move(many)), plain);

  std::string jsonl;
  for (int i = 0; i < 500; ++i)
    jsonl += "{\"text\": \"document " + std::to_string(i) + "\"}\n";
  write_file(dir.path("d.jsonl.zst"), zstd_bytes(jsonl, 1000));
  DocumentStream docs({dir.path("d.jsonl.zst")});
  std::string d;
  int n = 0;
  while (docs.next(d))
    EXPECT_EQ(d, "document " + std::to_string(n++));
  EXPECT_EQ(n, 500);
  EXPECT_EQ(docs.bytes_read(), jsonl.size());
  EXPECT_EQ(docs.file_bytes_read(), std::filesystem::file_size(dir.path("d.jsonl.zst")));
}

TEST(Documents, CorruptOrTruncatedZstdNamesTheFile) {
  TempDir dir;
  std::string jsonl;
  for (int i = 0; i < 2000; ++i)
    jsonl += "{\"text\": \"document " + std::to_string(i * 7919 % 1000) + "\"}\n";
  std::string bytes = zstd_bytes(jsonl);
  std::string corrupt = bytes;
  for (size_t i = corrupt.size() / 2; i < corrupt.size() / 2 + 16; ++i)
    corrupt[i] = static_cast<char>(corrupt[i] ^ 0x5A);
  write_file(dir.path("corrupt.jsonl.zst"), corrupt);
  write_file(dir.path("truncated.jsonl.zst"), bytes.substr(0, bytes.size() - 10));
  for (const char* name : {"corrupt.jsonl.zst", "truncated.jsonl.zst"}) {
    DocumentStream docs({dir.path(name)});
    try {
      std::string d;
      while (docs.next(d)) {
      }
      FAIL() << name << " read without an error";
    } catch (const Error& e) {
      EXPECT_EQ(e.where(), dir.path(name));
      EXPECT_NE(e.detail().find("zstd"), std::string::npos) << e.detail();
    }
  }
}

TEST(Documents, DomainsFromInputsFieldsAndSidecars) {
  TempDir dir;
  write_file(dir.path("a.txt"), "a one\n\na two\n\na three\n");
  write_file(dir.path("a.txt.domains"), "# genres\nnews 2\nfiction 1\n");
  write_file(dir.path("b.jsonl"),
             "{\"text\": \"b one\", \"src\": \"web\"}\n{\"text\": \"b two\", \"src\": "
             "\"code\"}\n");
  auto docs = read_all<Document>(
      DocumentStream(list_input_files({dir.path("a.txt"), dir.path("b.jsonl")}), "text", "src"));
  ASSERT_EQ(docs.size(), 5u);
  const std::vector<std::string> domains = {"news", "news", "fiction", "web", "code"};
  for (size_t i = 0; i < docs.size(); ++i)
    EXPECT_EQ(docs[i].domain, domains[i]) << docs[i].text;
  // DOMAIN=PATH names every document of the input (and overrides a sidecar).
  docs = read_all<Document>(DocumentStream(list_input_files({"books=" + dir.path("a.txt")})));
  ASSERT_EQ(docs.size(), 3u);
  for (const auto& d : docs)
    EXPECT_EQ(d.domain, "books");

  // A sidecar that does not count the file's documents, a bad line, a missing or bad field.
  const auto error_of = [&](DocumentStream&& stream) {
    try {
      read_all<Document>(std::move(stream));
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  write_file(dir.path("a.txt.domains"), "news 2\nfiction 2\n");
  EXPECT_EQ(error_of(DocumentStream({dir.path("a.txt")})),
            dir.path("a.txt.domains") + ": lists 4 documents; " + dir.path("a.txt") + " holds 3");
  write_file(dir.path("a.txt.domains"), "news\n");
  EXPECT_EQ(error_of(DocumentStream({dir.path("a.txt")})).rfind(dir.path("a.txt.domains:1"), 0),
            0u);
  write_file(dir.path("a.txt.domains"), "news 1\n");
  EXPECT_NE(error_of(DocumentStream({dir.path("a.txt")})).find("lists fewer documents"),
            std::string::npos);
  EXPECT_EQ(error_of(DocumentStream({dir.path("b.jsonl")}, "text", "source"))
                .rfind(dir.path("b.jsonl") + ":1: expected a string field \"source\"", 0),
            0u);
}

// Writes Parquet files with pyarrow from the project's environment (launch/setup.sh installs it).
void write_parquet_files(const std::string& dir) {
  const std::string script = dir + "/write.py";
  write_file(
      script,
      "import sys, pyarrow as pa, pyarrow.parquet as pq\n"
      "d = sys.argv[1]\n"
      "t = pa.table({'text': ['one', 'two\\nlines', '', 'caf\\u00e9', 'five'],\n"
      "              'source': ['web', 'web', 'web', 'code', 'code'],\n"
      "              'id': pa.array([1, 2, 3, 4, 5], pa.int64())})\n"
      "pq.write_table(t, d + '/docs.parquet', row_group_size=2)\n"
      "big = pa.table({'text': pa.array(['large ' + str(i) for i in range(7)], "
      "pa.large_string())})\n"
      "pq.write_table(big, d + '/large.parquet', row_group_size=3)\n"
      "pq.write_table(pa.table({'text': ['a', None, 'c']}), d + '/null.parquet')\n"
      "pq.write_table(pa.table({'text': ['a'], 'source': ['not ok']}), d + '/bad.parquet')\n");
  const auto r = testing::run_command(std::string(LADDER_PYTHON) + " " + script + " " + dir);
  ASSERT_EQ(r.status, 0) << r.output;
}

TEST(Documents, ParquetRowsTheirDomainsAndErrorsNamingFileAndRow) {
  TempDir dir;
  write_parquet_files(dir.path());
  const auto docs =
      read_all<Document>(DocumentStream({dir.path("docs.parquet")}, "text", "source"));
  ASSERT_EQ(docs.size(), 4u);  // the empty row is no document
  const std::vector<std::pair<std::string, std::string>> expected = {
      {"one", "web"}, {"two\nlines", "web"}, {"café", "code"}, {"five", "code"}};
  for (size_t i = 0; i < docs.size(); ++i) {
    EXPECT_EQ(docs[i].text, expected[i].first);
    EXPECT_EQ(docs[i].domain, expected[i].second);
  }
  // large_string columns, several row groups; folders list .parquet files.
  const auto large = read_all(DocumentStream({dir.path("large.parquet")}));
  ASSERT_EQ(large.size(), 7u);
  EXPECT_EQ(large[6], "large 6");
  EXPECT_EQ(list_input_files({dir.path()}).size(), 4u);

  const auto error_of = [](DocumentStream&& stream) {
    try {
      read_all(std::move(stream));
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_EQ(error_of(DocumentStream({dir.path("docs.parquet")}, "body")),
            dir.path("docs.parquet") +
                ": has no column \"body\" (its columns: text (string), source (string), id "
                "(int64))");
  EXPECT_EQ(error_of(DocumentStream({dir.path("docs.parquet")}, "id")),
            dir.path("docs.parquet") + ": column \"id\" holds int64, not strings");
  EXPECT_EQ(error_of(DocumentStream({dir.path("null.parquet")})),
            dir.path("null.parquet") + ": row 1: the text is null");
  EXPECT_EQ(error_of(DocumentStream({dir.path("bad.parquet")}, "text", "source")),
            dir.path("bad.parquet") +
                ": row 0: column \"source\" holds \"not ok\", not a domain name (letters, digits, "
                "_ - .)");
  write_file(dir.path("fake.parquet"), "not parquet at all");
  EXPECT_NE(error_of(DocumentStream({dir.path("fake.parquet")})).find("not a Parquet file"),
            std::string::npos);

  // Through prep: a dataset with the column's domains.
  PrepOptions o;
  o.inputs = {dir.path("docs.parquet")};
  o.out_dir = dir.path("ds");
  o.domain_field = "source";
  o.val_fraction = 0;
  const PrepReport report = run_prep(o);
  EXPECT_EQ(report.domains, (std::vector<std::string>{"web", "code"}));
  EXPECT_EQ(report.train_documents, 4u);
}

TEST(Documents, TheBundledCorpusCarriesItsFifteenGenres) {
  const std::string corpus = std::string(LADDER_SOURCE_DIR) + "/data/corpus/brown.txt.gz";
  std::vector<std::pair<std::string, int>> counts;
  DocumentStream docs({corpus});
  Document d;
  while (docs.next(d)) {
    if (counts.empty() || counts.back().first != d.domain) counts.emplace_back(d.domain, 0);
    ++counts.back().second;
  }
  const std::vector<std::pair<std::string, int>> manual = {
      {"press", 44},     {"editorial", 27}, {"reviews", 17},        {"religion", 17},
      {"skills", 36},    {"lore", 48},      {"belles_lettres", 75}, {"government", 30},
      {"learned", 80},   {"fiction", 29},   {"mystery", 24},        {"science_fiction", 6},
      {"adventure", 29}, {"romance", 29},   {"humour", 9}};
  EXPECT_EQ(counts, manual);
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

TEST(Prep, DomainsGetShardsOfTheirOwnInFirstSeenOrder) {
  TempDir dir;
  std::string jsonl;
  const std::vector<std::string> names = {"web", "code", "books"};
  for (int i = 0; i < 90; ++i)
    jsonl += "{\"text\": \"" + names[i % 3] + " document " + std::to_string(i) +
             "\", \"source\": \"" + names[i % 3] + "\"}\n";
  write_file(dir.path("mix.jsonl.zst"), zstd_bytes(jsonl, 500));
  PrepOptions o = options_for(dir);
  o.inputs = {dir.path("mix.jsonl.zst")};
  o.domain_field = "source";
  o.shard_tokens = 300;
  const PrepReport report = run_prep(o);
  EXPECT_EQ(report.domains, names);
  const DatasetMeta meta = DatasetMeta::read(o.out_dir);
  EXPECT_EQ(meta.domains, names);
  ASSERT_EQ(meta.train.domains.size(), 3u);
  uint64_t tokens = 0, documents = 0;
  std::vector<std::string> shards;
  for (const auto& [name, list] : meta.train.domains) {
    tokens += list.tokens, documents += list.documents;
    shards.insert(shards.end(), list.shards.begin(), list.shards.end());
    EXPECT_EQ(list.shards.front(), "train-" + name + "_000000.bin");
  }
  EXPECT_EQ(tokens, meta.train.tokens);
  EXPECT_EQ(documents, meta.train.documents);
  EXPECT_EQ(shards, meta.train.shards);  // the whole split is the domains in order
  EXPECT_EQ(meta.train.documents + meta.val.documents, 90u);

  // A domain's split decodes to that domain's documents only; two domains concatenate.
  auto tok = load_dataset_tokenizer(o.out_dir, meta);
  for (const auto& name : names) {
    TokenDataset ds(o.out_dir, "train", {name});
    std::vector<int64_t> ids(ds.size());
    ds.copy(0, ds.size(), ids.data());
    const std::string text = tok->decode(std::vector<TokenId>(ids.begin(), ids.end()));
    for (const auto& other : names)
      EXPECT_EQ(text.find(other + " document") != std::string::npos, other == name) << text;
  }
  EXPECT_EQ(TokenDataset(o.out_dir, "train", {"web", "books"}).size(),
            meta.train.domain("web").tokens + meta.train.domain("books").tokens);
  try {
    TokenDataset(o.out_dir, "train", {"news"});
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()),
              o.out_dir + ": has no domain \"news\" (it has web, code, books)");
  }

  // Documents with and without domains do not mix.
  write_file(dir.path("plain.txt"), "no domain\n");
  o.inputs = {dir.path("mix.jsonl.zst"), dir.path("plain.txt")};
  o.out_dir = dir.path("mixed");
  EXPECT_THROW(run_prep(o), Error);
  o.domain_field = "";
  o.inputs = {"a=" + dir.path("plain.txt"), dir.path("corpus.txt")};
  write_file(dir.path("corpus.txt"), corpus_text());
  try {
    run_prep(o);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.where(), dir.path("corpus.txt"));
  }
  EXPECT_FALSE(std::filesystem::exists(dir.path("mixed/dataset.toml")));
}

TEST(Prep, AFailedRunLeavesTheOldDatasetWhole) {
  TempDir dir;
  write_file(dir.path("corpus.txt"), corpus_text());
  PrepOptions o = options_for(dir);
  run_prep(o);
  const std::string toml = testing::read_file(dir.path("out/dataset.toml"));
  const std::string shard = testing::read_file(dir.path("out/train_000000.bin"));
  // A second run over a damaged zstd file fails midway: the dataset in the folder is untouched.
  std::string jsonl;
  for (int i = 0; i < 3000; ++i)
    jsonl += "{\"text\": \"document " + std::to_string(i * 7919 % 1000) + "\"}\n";
  std::string bytes = zstd_bytes(jsonl);
  write_file(dir.path("damaged.jsonl.zst"), bytes.substr(0, bytes.size() * 2 / 3));
  o.inputs = {dir.path("damaged.jsonl.zst")};
  o.force = true;
  EXPECT_THROW(run_prep(o), Error);
  EXPECT_EQ(testing::read_file(dir.path("out/dataset.toml")), toml);
  EXPECT_EQ(testing::read_file(dir.path("out/train_000000.bin")), shard);
  EXPECT_EQ(TokenDataset(o.out_dir, "train").meta().train.documents,
            DatasetMeta::read(o.out_dir).train.documents);
  // The next run clears what the failed one left and replaces the dataset: none of the old shards
  // stay behind.
  write_file(dir.path("small.txt"), "one small document\n");
  o.inputs = {dir.path("small.txt")};
  o.val_fraction = 0;
  run_prep(o);
  std::vector<std::string> left;
  for (const auto& e : std::filesystem::directory_iterator(o.out_dir))
    left.push_back(e.path().filename().string());
  std::sort(left.begin(), left.end());
  EXPECT_EQ(left, (std::vector<std::string>{"dataset.toml", "train_000000.bin"}));
}

TEST(Dataset, ReadsVersionOneDatasets) {
  TempDir dir;
  write_file(dir.path("corpus.txt"), corpus_text());
  PrepOptions o = options_for(dir);
  run_prep(o);
  std::string toml = testing::read_file(dir.path("out/dataset.toml"));
  const size_t at = toml.find("version = 2");
  ASSERT_NE(at, std::string::npos);
  toml.replace(at, 11, "version = 1");
  write_file(dir.path("out/dataset.toml"), toml);
  const DatasetMeta meta = DatasetMeta::read(o.out_dir);
  EXPECT_TRUE(meta.domains.empty());
  EXPECT_EQ(TokenDataset(o.out_dir, "val").size(), meta.val.tokens);
  toml.replace(at, 11, "version = 3");
  write_file(dir.path("out/dataset.toml"), toml);
  EXPECT_THROW(DatasetMeta::read(o.out_dir), Error);
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
