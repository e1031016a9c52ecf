// The C interface of the Parquet module (data/parquet_module.cpp, built as libladder_parquet.so
// against the Arrow C++ libraries of the project environment's pyarrow wheel).
//
// Why a module: Arrow is a large library with its own bundled dependencies, shipped by pyarrow
// rather than by Debian. Kept in a module that data/documents.cpp loads with dlopen(RTLD_LOCAL |
// RTLD_DEEPBIND) the first time it meets a .parquet file, it binds to its own copies and touches
// nothing else of the process; a build or machine without pyarrow still builds and runs, and only
// reading Parquet says what is missing. Only plain C types cross the boundary.
#pragma once

#include <stddef.h>
#include <stdint.h>

extern "C" {

struct ladder_parquet_file;

// Each call returns 0 on success; on failure it returns non-zero and *error points to a message
// that stays valid until the next call on the same file (or, for open, on the same thread).
//
// Opens `path` to read its string column `text_column` and, when `domain_column` is not empty, its
// string column `domain_column` too; a file without them is an error naming the columns it has.
int ladder_parquet_open(const char* path, const char* text_column, const char* domain_column,
                        ladder_parquet_file** file, const char** error);
void ladder_parquet_close(ladder_parquet_file* file);
// The next row: *text (and *domain, with a domain column) stay valid until the next call; *row is
// its 0-based index in the file. Returns 0 with *text = NULL at the end. A null cell is an error
// naming the row.
int ladder_parquet_next(ladder_parquet_file* file, const char** text, size_t* text_length,
                        const char** domain, size_t* domain_length, int64_t* row,
                        const char** error);
// Bytes of the file consumed so far (row groups read), for progress.
int64_t ladder_parquet_position(const ladder_parquet_file* file);
}
