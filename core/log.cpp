#include "core/log.h"

#include <algorithm>

#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/null_sink.h>
#include <spdlog/sinks/stdout_sinks.h>

#include "core/error.h"

namespace ladder {
namespace {

std::string pattern_for_rank(int rank) {
  return "%Y-%m-%d %H:%M:%S.%e [rank " + std::to_string(rank) + "] %l: %v";
}

int g_rank = 0;
std::shared_ptr<spdlog::sinks::sink> g_file_sink;  // the log_to_file sink, if any

}  // namespace

void init_logging(const LogOptions& options) {
  g_rank = options.rank;
  std::shared_ptr<spdlog::sinks::sink> console;
  if (options.rank == 0 || options.all_ranks_to_console) {
    // stderr keeps stdout free for machine-readable output (the resolved recipe, tables).
    console = std::make_shared<spdlog::sinks::stderr_sink_mt>();
  } else {
    console = std::make_shared<spdlog::sinks::null_sink_mt>();
  }
  auto logger = std::make_shared<spdlog::logger>("ladder", console);
  logger->set_pattern(pattern_for_rank(options.rank));
  logger->set_level(options.level);
  logger->flush_on(spdlog::level::trace);
  spdlog::set_default_logger(logger);
}

void log_to_file(const std::string& path) {
  std::shared_ptr<spdlog::sinks::sink> file;
  try {
    file = std::make_shared<spdlog::sinks::basic_file_sink_mt>(path, /*truncate=*/false);
  } catch (const spdlog::spdlog_ex& e) {
    throw Error(path, std::string("cannot open log file: ") + e.what());
  }
  file->set_pattern(pattern_for_rank(g_rank));
  file->set_level(spdlog::level::trace);  // the file gets everything the logger lets through
  close_log_file();
  spdlog::default_logger()->sinks().push_back(file);
  g_file_sink = file;
}

void close_log_file() {
  if (!g_file_sink) return;
  auto& sinks = spdlog::default_logger()->sinks();
  sinks.erase(std::remove(sinks.begin(), sinks.end(), g_file_sink), sinks.end());
  g_file_sink.reset();
}

spdlog::level::level_enum parse_log_level(const std::string& name) {
  // The names --help lists (spdlog's own spell warn "warning", also accepted).
  static const std::pair<const char*, spdlog::level::level_enum> kLevels[] = {
      {"trace", spdlog::level::trace},  {"debug", spdlog::level::debug},
      {"info", spdlog::level::info},    {"warn", spdlog::level::warn},
      {"warning", spdlog::level::warn}, {"error", spdlog::level::err},
      {"off", spdlog::level::off}};
  for (const auto& [text, level] : kLevels)
    if (name == text) return level;
  throw Error("--log-level",
              "must be one of trace, debug, info, warn, error, off; got \"" + name + "\"");
}

}  // namespace ladder
