#include "data/documents.h"

#include <zlib.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "core/error.h"

namespace ladder::data {
namespace fs = std::filesystem;
namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string strip_gz(const std::string& name) {
  return ends_with(name, ".gz") ? name.substr(0, name.size() - 3) : name;
}

bool is_corpus_file(const fs::path& p) {
  const std::string name = strip_gz(p.filename().string());
  return ends_with(name, ".txt") || ends_with(name, ".text") || ends_with(name, ".jsonl");
}

bool is_blank(const std::string& line) {
  return std::all_of(line.begin(), line.end(), [](unsigned char c) { return std::isspace(c); });
}

}  // namespace

std::vector<std::string> list_input_files(const std::vector<std::string>& inputs) {
  if (inputs.empty()) throw Error("--input", "no input files or folders given");
  std::vector<std::string> files;
  for (const auto& input : inputs) {
    std::error_code ec;
    const auto status = fs::status(input, ec);
    if (ec || !fs::exists(status)) throw Error(input, "no such file or folder");
    if (fs::is_directory(status)) {
      std::vector<std::string> found;
      for (auto it = fs::recursive_directory_iterator(input, ec); !ec && it != fs::end(it);
           it.increment(ec)) {
        if (it->is_regular_file() && is_corpus_file(it->path()))
          found.push_back(it->path().string());
      }
      if (ec) throw Error(input, "cannot list folder: " + ec.message());
      if (found.empty())
        throw Error(input, "folder holds no *.txt, *.text or *.jsonl files (optionally .gz)");
      std::sort(found.begin(), found.end());
      files.insert(files.end(), found.begin(), found.end());
    } else {
      files.push_back(input);
    }
  }
  return files;
}

// Reads lines from a plain or gzip file (zlib reads plain files transparently).
class DocumentStream::LineReader {
 public:
  explicit LineReader(const std::string& path) : path_(path) {
    file_ = gzopen(path.c_str(), "rb");
    if (!file_) throw Error(path, "cannot open");
    gzbuffer(file_, 1 << 20);
  }
  ~LineReader() { gzclose(file_); }

  // Next line without its '\n' (and without a trailing '\r'); false at end of file.
  bool next(std::string& line, uint64_t& bytes) {
    line.clear();
    for (;;) {
      if (pos_ == end_) {
        if (eof_) return !line.empty();
        const int n = gzread(file_, buffer_, sizeof buffer_);
        if (n < 0) {
          int code = 0;
          throw Error(path_, std::string("read failed: ") + gzerror(file_, &code));
        }
        if (n == 0) {
          eof_ = true;
          continue;
        }
        bytes += static_cast<uint64_t>(n);
        pos_ = 0;
        end_ = static_cast<size_t>(n);
      }
      const char* start = buffer_ + pos_;
      const char* nl = static_cast<const char*>(std::memchr(start, '\n', end_ - pos_));
      if (nl) {
        line.append(start, nl - start);
        pos_ += (nl - start) + 1;
        ++line_number_;
        if (!line.empty() && line.back() == '\r') line.pop_back();
        return true;
      }
      line.append(start, end_ - pos_);
      pos_ = end_;
    }
  }
  uint64_t line_number() const { return line_number_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  gzFile file_ = nullptr;
  char buffer_[1 << 16];
  size_t pos_ = 0, end_ = 0;
  bool eof_ = false;
  uint64_t line_number_ = 0;
};

DocumentStream::DocumentStream(std::vector<std::string> files, std::string jsonl_field)
    : files_(std::move(files)), jsonl_field_(std::move(jsonl_field)) {}

DocumentStream::~DocumentStream() = default;

bool DocumentStream::open_next_file() {
  reader_.reset();
  if (next_file_ >= files_.size()) return false;
  const std::string& path = files_[next_file_++];
  jsonl_ = ends_with(strip_gz(path), ".jsonl");
  reader_ = std::make_unique<LineReader>(path);
  return true;
}

bool DocumentStream::next(std::string& document) {
  document.clear();
  std::string line;
  for (;;) {
    if (!reader_ && !open_next_file()) return false;
    if (!reader_->next(line, bytes_read_)) {
      reader_.reset();
      if (!document.empty()) return true;  // a text file's last document
      continue;
    }
    if (jsonl_) {
      if (is_blank(line)) continue;
      const std::string where = reader_->path() + ":" + std::to_string(reader_->line_number());
      nlohmann::json object;
      try {
        object = nlohmann::json::parse(line);
      } catch (const nlohmann::json::parse_error& e) {
        throw Error(where, std::string("invalid JSON: ") + e.what());
      }
      auto field = object.is_object() ? object.find(jsonl_field_) : object.end();
      if (field == object.end() || !field->is_string())
        throw Error(where, "expected a JSON object with a string field \"" + jsonl_field_ + "\"");
      document = field->get<std::string>();
      if (!document.empty()) return true;
      continue;
    }
    if (is_blank(line)) {
      if (!document.empty()) return true;
      continue;
    }
    document += line;
    document += '\n';
  }
}

}  // namespace ladder::data
