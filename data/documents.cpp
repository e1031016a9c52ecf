#include "data/documents.h"

#include <zlib.h>
#include <zstd.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "data/module_loader.h"
#include "data/parquet_module.h"

namespace ladder::data {
namespace fs = std::filesystem;
namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string strip_compression(const std::string& name) {
  for (const char* suffix : {".gz", ".zst"})
    if (ends_with(name, suffix)) return name.substr(0, name.size() - std::strlen(suffix));
  return name;
}

bool is_corpus_file(const fs::path& p) {
  if (p.extension() == ".parquet") return true;
  const std::string name = strip_compression(p.filename().string());
  return ends_with(name, ".txt") || ends_with(name, ".text") || ends_with(name, ".jsonl");
}

bool is_blank(const std::string& line) {
  return std::all_of(line.begin(), line.end(), [](unsigned char c) { return std::isspace(c); });
}

// A file's bytes, decompressed: zstd by its magic number, otherwise zlib (which reads gzip and
// passes plain files through).
class ByteSource {
 public:
  virtual ~ByteSource() = default;
  // Up to `capacity` bytes into `out`; 0 at the end. Corrupt data throws ladder::Error.
  virtual size_t read(char* out, size_t capacity) = 0;
  virtual uint64_t file_position() const = 0;  // bytes of the file consumed
};

class ZlibSource final : public ByteSource {
 public:
  explicit ZlibSource(const std::string& path) : path_(path) {
    file_ = gzopen(path.c_str(), "rb");
    if (!file_) throw Error(path, "cannot open");
    gzbuffer(file_, 1 << 20);
  }
  ~ZlibSource() override { gzclose(file_); }
  size_t read(char* out, size_t capacity) override {
    const int n = gzread(file_, out, static_cast<unsigned>(capacity));
    if (n < 0) {
      int code = 0;
      throw Error(path_, std::string("read failed: ") + gzerror(file_, &code));
    }
    return static_cast<size_t>(n);
  }
  uint64_t file_position() const override { return static_cast<uint64_t>(gzoffset(file_)); }

 private:
  std::string path_;
  gzFile file_ = nullptr;
};

class ZstdSource final : public ByteSource {
 public:
  explicit ZstdSource(const std::string& path)
      : path_(path), input_(ZSTD_DStreamInSize()), stream_(ZSTD_createDStream()) {
    file_ = std::fopen(path.c_str(), "rb");
    if (!file_) throw Error(path, "cannot open");
    ZSTD_initDStream(stream_);
  }
  ~ZstdSource() override {
    ZSTD_freeDStream(stream_);
    std::fclose(file_);
  }
  size_t read(char* out, size_t capacity) override {
    ZSTD_outBuffer output{out, capacity, 0};
    while (output.pos == 0) {
      if (in_.pos == in_.size) {
        const size_t n = std::fread(input_.data(), 1, input_.size(), file_);
        if (n == 0) {
          if (std::ferror(file_)) throw Error(path_, "read failed");
          if (frame_open_)
            throw Error(path_, "truncated zstd data: the file ends inside a frame (at byte " +
                                   std::to_string(consumed_) + ")");
          return 0;
        }
        in_ = {input_.data(), n, 0};
      }
      const size_t before = in_.pos;
      const size_t r = ZSTD_decompressStream(stream_, &output, &in_);
      consumed_ += in_.pos - before;
      if (ZSTD_isError(r))
        throw Error(path_, std::string("corrupt zstd data near byte ") + std::to_string(consumed_) +
                               ": " + ZSTD_getErrorName(r));
      frame_open_ = r != 0;
    }
    return output.pos;
  }
  uint64_t file_position() const override { return consumed_; }

 private:
  std::string path_;
  std::FILE* file_ = nullptr;
  std::vector<char> input_;
  ZSTD_inBuffer in_{nullptr, 0, 0};
  ZSTD_DStream* stream_;
  uint64_t consumed_ = 0;
  bool frame_open_ = false;
};

std::unique_ptr<ByteSource> open_source(const std::string& path) {
  unsigned char magic[4] = {0, 0, 0, 0};
  if (std::FILE* f = std::fopen(path.c_str(), "rb")) {
    const size_t n = std::fread(magic, 1, 4, f);
    std::fclose(f);
    if (n == 4 && magic[0] == 0x28 && magic[1] == 0xB5 && magic[2] == 0x2F && magic[3] == 0xFD)
      return std::make_unique<ZstdSource>(path);
  }
  return std::make_unique<ZlibSource>(path);
}

// A text file's `<file>.domains`: "NAME COUNT" lines in document order ('#' starts a comment).
std::vector<std::pair<std::string, uint64_t>> read_sidecar(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw Error(path, "cannot read");
  std::vector<std::pair<std::string, uint64_t>> domains;
  std::string line;
  for (int number = 1; std::getline(in, line); ++number) {
    line = line.substr(0, line.find('#'));
    std::istringstream fields(line);
    std::string name, extra;
    long long count = -1;
    if (!(fields >> name)) continue;
    if (!(fields >> count) || count < 0 || (fields >> extra) || !valid_domain_name(name))
      throw Error(path + ":" + std::to_string(number),
                  "expected \"NAME COUNT\" (a domain name of letters, digits, _ - . and a count "
                  "of documents)");
    domains.emplace_back(name, static_cast<uint64_t>(count));
  }
  return domains;
}

}  // namespace

std::vector<InputFile> list_input_files(const std::vector<std::string>& inputs) {
  if (inputs.empty()) throw Error("--input", "no input files or folders given");
  std::vector<InputFile> files;
  for (const auto& spec : inputs) {
    std::error_code ec;
    std::string input = spec, domain;
    const size_t eq = spec.find('=');
    if (eq != std::string::npos && !fs::exists(spec, ec)) {
      domain = spec.substr(0, eq), input = spec.substr(eq + 1);
      if (!valid_domain_name(domain))
        throw Error("--input " + spec,
                    "\"" + domain + "\" is not a domain name (letters, digits, _ - .)");
    }
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
        throw Error(input,
                    "folder holds no *.txt, *.text or *.jsonl files (optionally .gz or "
                    ".zst) and no *.parquet files");
      std::sort(found.begin(), found.end());
      for (auto& f : found)
        files.emplace_back(std::move(f), domain);
    } else {
      files.emplace_back(input, domain);
    }
  }
  return files;
}

// Reads lines from a file through its ByteSource.
class DocumentStream::LineReader {
 public:
  explicit LineReader(const std::string& path) : path_(path), source_(open_source(path)) {}

  // Next line without its '\n' (and without a trailing '\r'); false at end of file.
  bool next(std::string& line, uint64_t& bytes) {
    line.clear();
    for (;;) {
      if (pos_ == end_) {
        if (eof_) return !line.empty();
        const size_t n = source_->read(buffer_, sizeof buffer_);
        if (n == 0) {
          eof_ = true;
          continue;
        }
        bytes += n;
        pos_ = 0;
        end_ = n;
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
  uint64_t file_position() const { return source_->file_position(); }

 private:
  std::string path_;
  std::unique_ptr<ByteSource> source_;
  char buffer_[1 << 16];
  size_t pos_ = 0, end_ = 0;
  bool eof_ = false;
  uint64_t line_number_ = 0;
};

// Rows of a Parquet file through the Parquet module (data/parquet_module.h), loaded on first use.
class DocumentStream::ParquetReader {
 public:
  ParquetReader(const std::string& path, const std::string& text_column,
                const std::string& domain_column)
      : path_(path), m_(Module::get()) {
    const char* error = nullptr;
    if (m_.open(path.c_str(), text_column.c_str(), domain_column.c_str(), &file_, &error) != 0)
      throw Error(path, error);
  }
  ~ParquetReader() { m_.close(file_); }
  // The next row's text and domain; false at the end. Errors name the file and row.
  bool next(std::string& text, std::string& domain) {
    const char *t = nullptr, *d = nullptr, *error = nullptr;
    size_t tn = 0, dn = 0;
    if (m_.next(file_, &t, &tn, &d, &dn, &row_, &error) != 0) throw Error(path_, error);
    if (!t) return false;
    text.assign(t, tn);
    domain.assign(d ? d : "", dn);
    return true;
  }
  int64_t row() const { return row_; }
  uint64_t file_position() const { return static_cast<uint64_t>(m_.position(file_)); }

 private:
  struct Module {
    decltype(&ladder_parquet_open) open;
    decltype(&ladder_parquet_close) close;
    decltype(&ladder_parquet_next) next;
    decltype(&ladder_parquet_position) position;
    static const Module& get() {
      static const Module m = [] {
        const LoadedModule lib("libladder_parquet.so", "LADDER_PARQUET_MODULE",
                               LADDER_PARQUET_MODULE_PATH, "parquet",
                               "it is built with ladder when CMake finds pyarrow in the project "
                               "environment, which launch/setup.sh installs");
        return Module{lib.symbol<decltype(open)>("ladder_parquet_open"),
                      lib.symbol<decltype(close)>("ladder_parquet_close"),
                      lib.symbol<decltype(next)>("ladder_parquet_next"),
                      lib.symbol<decltype(position)>("ladder_parquet_position")};
      }();
      return m;
    }
  };
  std::string path_;
  const Module& m_;
  ladder_parquet_file* file_ = nullptr;
  int64_t row_ = 0;
};

DocumentStream::DocumentStream(std::vector<InputFile> files, std::string jsonl_field,
                               std::string domain_field)
    : files_(std::move(files)),
      jsonl_field_(std::move(jsonl_field)),
      domain_field_(std::move(domain_field)) {}

DocumentStream::~DocumentStream() = default;

uint64_t DocumentStream::file_bytes_read() const {
  return finished_file_bytes_ + (reader_    ? reader_->file_position()
                                 : parquet_ ? parquet_->file_position()
                                            : 0);
}

bool DocumentStream::open_next_file() {
  reader_.reset(), parquet_.reset();
  if (next_file_ >= files_.size()) return false;
  const InputFile& file = files_[next_file_++];
  jsonl_ = ends_with(strip_compression(file.path), ".jsonl");
  if (ends_with(file.path, ".parquet"))
    parquet_ = std::make_unique<ParquetReader>(file.path, jsonl_field_, domain_field_);
  else
    reader_ = std::make_unique<LineReader>(file.path);
  file_documents_ = 0;
  sidecar_.clear();
  sidecar_path_ = file.path + ".domains";
  if (reader_ && !jsonl_ && file.domain.empty() && fs::exists(sidecar_path_))
    sidecar_ = read_sidecar(sidecar_path_);
  return true;
}

// At the end of a file: its sidecar must have listed exactly its documents.
void DocumentStream::finish_file() {
  const std::string& path = current_file();
  if (!sidecar_.empty()) {
    uint64_t listed = 0;
    for (const auto& [name, count] : sidecar_)
      listed += count;
    if (listed != file_documents_)
      throw Error(sidecar_path_, "lists " + std::to_string(listed) + " documents; " + path +
                                     " holds " + std::to_string(file_documents_));
  }
  std::error_code ec;
  const auto size = fs::file_size(path, ec);
  finished_file_bytes_ += ec ? file_bytes_read() - finished_file_bytes_ : size;
  reader_.reset(), parquet_.reset();
}

bool DocumentStream::next(std::string& text) {
  Document d;
  if (!next(d)) return false;
  text = std::move(d.text);
  return true;
}

bool DocumentStream::next(Document& document) {
  document.text.clear();
  std::string line;
  const auto found = [&]() {
    const InputFile& file = files_[next_file_ - 1];
    if (document.domain.empty()) document.domain = file.domain;
    if (!sidecar_.empty()) {
      uint64_t before = file_documents_;
      for (const auto& [name, count] : sidecar_) {
        if (before < count) {
          document.domain = name;
          break;
        }
        before -= count;
      }
      if (document.domain.empty())
        throw Error(sidecar_path_, "lists fewer documents than " + file.path + " holds");
    }
    ++file_documents_;
    return true;
  };
  document.domain.clear();
  for (;;) {
    if (!reader_ && !parquet_ && !open_next_file()) return false;
    if (parquet_) {  // a row of the text column (and the domain column)
      std::string domain;
      if (!parquet_->next(document.text, domain)) {
        finish_file();
        continue;
      }
      bytes_read_ += document.text.size();
      if (!domain_field_.empty()) {
        if (!valid_domain_name(domain))
          throw Error(current_file() + ": row " + std::to_string(parquet_->row()),
                      "column \"" + domain_field_ + "\" holds \"" + domain +
                          "\", not a domain name (letters, digits, _ - .)");
        document.domain = domain;
      }
      if (document.text.empty()) continue;
      return found();
    }
    if (!reader_->next(line, bytes_read_)) {
      const bool last_document = !document.text.empty();
      if (last_document) found();  // a text file's last document
      finish_file();
      if (last_document) return true;
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
      document.text = field->get<std::string>();
      if (!domain_field_.empty()) {
        auto domain = object.find(domain_field_);
        if (domain == object.end() || !domain->is_string() ||
            !valid_domain_name(domain->get<std::string>()))
          throw Error(where, "expected a string field \"" + domain_field_ +
                                 "\" naming the document's domain (letters, digits, _ - .)");
        document.domain = domain->get<std::string>();
      }
      if (!document.text.empty()) return found();
      continue;
    }
    if (is_blank(line)) {
      if (!document.text.empty()) return found();
      continue;
    }
    document.text += line;
    document.text += '\n';
  }
}

}  // namespace ladder::data
