// The Parquet module (data/parquet_module.h): reads one or two string columns of a Parquet file a
// row group at a time through Arrow's parquet::arrow::FileReader, so memory is bounded by a row
// group, not the file.
#include "data/parquet_module.h"

#include <arrow/api.h>
#include <arrow/io/file.h>
#include <parquet/arrow/reader.h>
#include <parquet/exception.h>

#include <memory>
#include <string>
#include <vector>

struct ladder_parquet_file {
  std::string path;
  std::unique_ptr<parquet::arrow::FileReader> reader;
  int text_index = -1, domain_index = -1;
  int row_groups = 0, next_group = 0;
  std::shared_ptr<arrow::ChunkedArray> text, domain;
  int chunk = 0;
  int64_t in_chunk = 0;
  int64_t row = 0;  // of the next row
  int64_t position = 0;
  std::string error;
};

namespace {

thread_local std::string open_error;

// The column's string view at (chunk, index): utf8 or large_utf8 (or binary); false for null.
bool cell(const arrow::ChunkedArray& column, int chunk, int64_t i, const char** data,
          size_t* length) {
  const auto& array = *column.chunk(chunk);
  if (array.IsNull(i)) return false;
  if (array.type_id() == arrow::Type::LARGE_STRING ||
      array.type_id() == arrow::Type::LARGE_BINARY) {
    const auto view = static_cast<const arrow::LargeBinaryArray&>(array).GetView(i);
    *data = view.data(), *length = view.size();
  } else {
    const auto view = static_cast<const arrow::BinaryArray&>(array).GetView(i);
    *data = view.data(), *length = view.size();
  }
  return true;
}

bool holds_text(const arrow::DataType& t) {
  return t.id() == arrow::Type::STRING || t.id() == arrow::Type::LARGE_STRING ||
         t.id() == arrow::Type::BINARY || t.id() == arrow::Type::LARGE_BINARY;
}

}  // namespace

extern "C" {

int ladder_parquet_open(const char* path, const char* text_column, const char* domain_column,
                        ladder_parquet_file** out, const char** error) {
  auto file = std::make_unique<ladder_parquet_file>();
  file->path = path;
  auto fail = [&](const std::string& message) {
    open_error = message;
    *error = open_error.c_str();
    return 1;
  };
  try {
    auto input = arrow::io::ReadableFile::Open(path);
    if (!input.ok()) return fail(input.status().message());
    auto reader = parquet::arrow::OpenFile(*input, arrow::default_memory_pool());
    if (!reader.ok()) return fail("not a Parquet file: " + reader.status().message());
    file->reader = std::move(*reader);
    std::shared_ptr<arrow::Schema> schema;
    const auto status = file->reader->GetSchema(&schema);
    if (!status.ok()) return fail(status.message());
    std::string columns;
    for (const auto& f : schema->fields())
      columns += (columns.empty() ? "" : ", ") + f->name() + " (" + f->type()->ToString() + ")";
    auto find = [&](const std::string& name, int& index) -> int {
      index = schema->GetFieldIndex(name);
      if (index < 0) return fail("has no column \"" + name + "\" (its columns: " + columns + ")");
      if (!holds_text(*schema->field(index)->type()))
        return fail("column \"" + name + "\" holds " + schema->field(index)->type()->ToString() +
                    ", not strings");
      return 0;
    };
    if (find(text_column, file->text_index)) return 1;
    if (domain_column && *domain_column && find(domain_column, file->domain_index)) return 1;
    file->row_groups = file->reader->num_row_groups();
  } catch (const std::exception& e) {
    return fail(e.what());
  }
  *out = file.release();
  return 0;
}

void ladder_parquet_close(ladder_parquet_file* file) {
  delete file;
}

int ladder_parquet_next(ladder_parquet_file* f, const char** text, size_t* text_length,
                        const char** domain, size_t* domain_length, int64_t* row,
                        const char** error) {
  try {
    for (;;) {
      if (f->text && f->chunk < f->text->num_chunks()) {
        if (f->in_chunk < f->text->chunk(f->chunk)->length()) break;
        ++f->chunk, f->in_chunk = 0;
        continue;
      }
      if (f->next_group >= f->row_groups) {
        *text = nullptr;
        return 0;
      }
      // The next row group's columns.
      std::vector<int> columns = {f->text_index};
      if (f->domain_index >= 0) columns.push_back(f->domain_index);
      auto read = f->reader->ReadRowGroup(f->next_group, columns);
      if (!read.ok()) {
        f->error = "row group " + std::to_string(f->next_group) + ": " + read.status().message();
        *error = f->error.c_str();
        return 1;
      }
      const std::shared_ptr<arrow::Table> table = *read;
      f->position +=
          f->reader->parquet_reader()->metadata()->RowGroup(f->next_group)->total_compressed_size();
      ++f->next_group;
      f->text = table->column(0);
      f->domain = f->domain_index >= 0 ? table->column(1) : nullptr;
      f->chunk = 0, f->in_chunk = 0;
    }
    *row = f->row;
    if (!cell(*f->text, f->chunk, f->in_chunk, text, text_length)) {
      f->error = "row " + std::to_string(f->row) + ": the text is null";
      *error = f->error.c_str();
      return 1;
    }
    if (f->domain) {
      // The domain column's chunks need not align with the text's: locate the row in it.
      int64_t offset = 0;
      for (int c = 0; c < f->text->num_chunks() && c < f->chunk; ++c)
        offset += f->text->chunk(c)->length();
      offset += f->in_chunk;
      int dc = 0;
      while (offset >= f->domain->chunk(dc)->length())
        offset -= f->domain->chunk(dc++)->length();
      if (!cell(*f->domain, dc, offset, domain, domain_length)) {
        f->error = "row " + std::to_string(f->row) + ": the domain is null";
        *error = f->error.c_str();
        return 1;
      }
    } else {
      *domain = nullptr, *domain_length = 0;
    }
    ++f->in_chunk, ++f->row;
    return 0;
  } catch (const std::exception& e) {
    f->error = e.what();
    *error = f->error.c_str();
    return 1;
  }
}

int64_t ladder_parquet_position(const ladder_parquet_file* f) {
  return f->position;
}
}
