// Reading documents from plain text, gzip text and JSONL files or folders of them.
//
// - Plain text (any name; gzip detected by content): documents are separated by one or more blank
// lines,
//   as in the bundled Brown corpus (one sentence per line, a blank line between its 500 samples).
// - JSONL (`*.jsonl`, `*.jsonl.gz`): one JSON object per line; the document is its string field
// `text`
//   (configurable).
// - Folders are walked recursively; files are read in sorted path order so the output is
// deterministic.
//   Inside folders only *.txt, *.text, *.jsonl and their .gz forms are read (READMEs and the like
//   are not).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace ladder::data {

// The files `inputs` name, expanded and sorted as described above. Errors name the missing path.
std::vector<std::string> list_input_files(const std::vector<std::string>& inputs);

class DocumentStream {
 public:
  DocumentStream(std::vector<std::string> files, std::string jsonl_field = "text");
  ~DocumentStream();
  // The next non-empty document; false at the end of the last file.
  bool next(std::string& document);
  uint64_t bytes_read() const { return bytes_read_; }  // uncompressed bytes consumed so far

 private:
  class LineReader;
  bool open_next_file();

  std::vector<std::string> files_;
  std::string jsonl_field_;
  size_t next_file_ = 0;
  std::unique_ptr<LineReader> reader_;
  bool jsonl_ = false;
  uint64_t bytes_read_ = 0;
};

}  // namespace ladder::data
