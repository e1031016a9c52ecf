// Reading documents from plain, gzip and zstd text and JSONL files, Parquet files, or folders of
// them.
//
// - Plain text (any name; gzip and zstd detected by content): documents are separated by one or
//   more blank lines, as in the bundled Brown corpus (one sentence per line, a blank line between
//   its 500 samples).
// - JSONL (`*.jsonl`, `*.jsonl.gz`, `*.jsonl.zst`): one JSON object per line; the document is its
//   string field `text` (configurable).
// - Parquet (`*.parquet`): one document per row, the string column `text` (configurable, as for
//   JSONL), read a row group at a time through the Parquet module (data/parquet_module.h).
// - Folders are walked recursively; files are read in sorted path order so the output is
//   deterministic. Inside folders only *.txt, *.text, *.jsonl, their .gz / .zst forms and *.parquet
//   are read (READMEs and the like are not).
//
// Domains (named parts of a corpus: a loss per domain, mixtures of them) come from one of
//   - the input: `--input press=data/press.jsonl.zst` names every document of that input;
//   - a JSONL field or Parquet column (`--domain-field source`) naming each document's domain;
//   - a sidecar `<file>.domains` beside a text file: lines "NAME COUNT" giving the domains of its
//     documents in order (the bundled corpus ships one: its 15 genres).
// Every document has a domain, or none has (one unnamed domain). Names are letters, digits, '_',
// '-' and '.'.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/data_source.h"  // valid_domain_name

namespace ladder::data {

struct InputFile {
  InputFile(std::string path_, std::string domain_ = "")
      : path(std::move(path_)), domain(std::move(domain_)) {}
  std::string path;
  std::string domain;  // from DOMAIN=PATH; "" when the input named none
  bool operator==(const InputFile&) const = default;
};

// The files `inputs` ("[DOMAIN=]PATH") name, expanded and sorted as described above. Errors name
// the missing path or the bad domain name.
std::vector<InputFile> list_input_files(const std::vector<std::string>& inputs);

struct Document {
  std::string text;
  std::string domain;
};

class DocumentStream {
 public:
  DocumentStream(std::vector<InputFile> files, std::string jsonl_field = "text",
                 std::string domain_field = "");
  ~DocumentStream();
  // The next non-empty document; false at the end of the last file. Errors name the file and line.
  bool next(Document& document);
  bool next(std::string& text);
  uint64_t bytes_read() const { return bytes_read_; }
  // The file the last document came from.
  const std::string& current_file() const {
    return files_[next_file_ - 1].path;
  }  // uncompressed bytes consumed so far
  // Bytes of the files (as stored, compressed or not) consumed so far: progress against the sum of
  // their sizes.
  uint64_t file_bytes_read() const;

 private:
  class LineReader;
  class ParquetReader;
  bool open_next_file();
  void finish_file();

  std::vector<InputFile> files_;
  std::string jsonl_field_;
  std::string domain_field_;
  size_t next_file_ = 0;
  std::unique_ptr<LineReader> reader_;      // a text or JSONL file
  std::unique_ptr<ParquetReader> parquet_;  // a Parquet file
  bool jsonl_ = false;
  uint64_t bytes_read_ = 0;
  uint64_t finished_file_bytes_ = 0;
  // The open text file's sidecar: (domain, documents) in order, and the documents read so far.
  std::vector<std::pair<std::string, uint64_t>> sidecar_;
  std::string sidecar_path_;
  uint64_t file_documents_ = 0;
};

}  // namespace ladder::data
