#include "core/log.h"

#include <gtest/gtest.h>

#include <regex>

#include "core/error.h"
#include "test_util.h"

namespace ladder {
namespace {

TEST(Log, FileLinesCarryTimeAndRankAndAppend) {
  testing::TempDir dir;
  const std::string path = dir.path("log.txt");
  testing::write_file(path, "earlier line\n");
  LogOptions options;
  options.rank = 3;  // a non-zero rank: nothing on the console, everything in the file
  init_logging(options);
  log_to_file(path);
  spdlog::info("hello {}", 42);
  spdlog::debug("below the level");
  spdlog::warn("careful");
  const std::string text = testing::read_file(path);
  const std::regex expected(
      "earlier line\n"
      "\\d{4}-\\d\\d-\\d\\d \\d\\d:\\d\\d:\\d\\d\\.\\d{3} \\[rank 3\\] info: hello 42\n"
      "\\d{4}-\\d\\d-\\d\\d \\d\\d:\\d\\d:\\d\\d\\.\\d{3} \\[rank 3\\] warning: careful\n");
  EXPECT_TRUE(std::regex_match(text, expected)) << text;
  init_logging(LogOptions{});  // detach the file before the folder goes
}

TEST(Log, LevelNames) {
  EXPECT_EQ(parse_log_level("debug"), spdlog::level::debug);
  EXPECT_EQ(parse_log_level("error"), spdlog::level::err);
  EXPECT_EQ(parse_log_level("warning"), spdlog::level::warn);
  EXPECT_EQ(parse_log_level("warn"), spdlog::level::warn);  // as --help spells it (sweeps pass it)
  try {
    parse_log_level("loud");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(format_error(e),
              "ladder: error: --log-level: must be one of trace, debug, info, warn, "
              "error, off; got \"loud\"");
  }
}

TEST(Error, FormatsWhereAndWhat) {
  EXPECT_EQ(format_error(Error("recipe.toml:3", "model.d_model: bad")),
            "ladder: error: recipe.toml:3: model.d_model: bad");
  EXPECT_EQ(format_error(Error("", "no where")), "ladder: error: no where");
}

}  // namespace
}  // namespace ladder
