// Logging for every rank (spdlog). Each line carries time and rank:
//     2026-11-24 13:30:00.123 [rank 0] info: ...
// Rank 0 logs to the console by default (--log-all-ranks: every rank); every rank appends to the
// run's log file once the trainer has opened one.
#pragma once

#include <string>

#include <spdlog/spdlog.h>

namespace ladder {

struct LogOptions {
  int rank = 0;
  bool all_ranks_to_console = false;
  spdlog::level::level_enum level = spdlog::level::info;
};

// Replaces spdlog's default logger; call once at start-up, before any log line.
void init_logging(const LogOptions& options);

// Adds a file sink to the default logger: every rank appends to the same file. Each line is flushed
// with one write(2) to a file opened O_APPEND, so lines of different ranks never interleave
// mid-line. A later call replaces the file (runs of a sweep in one process each log to their own).
void log_to_file(const std::string& path);

// Stops logging to the file of log_to_file (the console stays).
void close_log_file();

// Parses "trace|debug|info|warn|error|off"; throws ladder::Error otherwise.
spdlog::level::level_enum parse_log_level(const std::string& name);

}  // namespace ladder
