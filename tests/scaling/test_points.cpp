// The fitter's input: traces written by the trainer's own Trace writer (the contract between the
// two), CSV files, and every kind of bad input.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "core/error.h"
#include "core/hdf5.h"
#include "scaling/points.h"
#include "test_util.h"
#include "trainer/run/trace.h"

namespace ladder::scaling {
namespace {

namespace fs = std::filesystem;

// A run folder with a trace of evaluation rows at tokens 100, 200, ..., 1000 (one loss NaN).
void write_run(const std::string& dir, double lr, const std::string& arch, bool with_eval = true) {
  fs::create_directories(dir);
  Trace trace(dir + "/trace.h5",
              {{"arch", arch},
               {"N", int64_t{1000000}},
               {"streams", int64_t{2}},
               {"experts", int64_t{0}},
               {"lr", lr},
               {"width", int64_t{256}},
               {"recipe", std::string("[run]\n")}},
              -1);
  for (int64_t i = 1; i <= 10; ++i) {
    const double loss = i == 4 ? std::nan("") : 5.0 - 0.1 * static_cast<double>(i);
    if (with_eval) trace.append(EvalRecord{i, 100 * i, 6e6 * 100 * i, loss});
    TrainRecord row;
    for (const auto& [column, value] :
         std::vector<std::pair<const char*, double>>{{"step", i},
                                                     {"tokens", 100 * i},
                                                     {"flops", 6e6 * 100 * i},
                                                     {"loss", loss + 0.05},
                                                     {"lr", lr},
                                                     {"grad_norm", 1},
                                                     {"tokens_per_s", 1},
                                                     {"mfu", 0},
                                                     {"elapsed_s", 1},
                                                     {"step_s", 1},
                                                     {"compute_s", 1}})
      row.set(column, value);
    trace.append(row);
  }
}

bool contains(const std::vector<std::string>& lines, const std::string& text) {
  for (const auto& l : lines)
    if (l.find(text) != std::string::npos) return true;
  return false;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(Points, TraceEvaluationsBecomePointsWithTheRunsAttributes) {
  testing::TempDir dir;
  write_run(dir.path("runs/a"), 0.003, "dense");
  write_run(dir.path("runs/nested/b"), 0.001, "moe");
  std::vector<std::string> warnings;
  const auto points = load_points({dir.path("runs")}, PointOptions{}, warnings);
  // 10 rows per run, one NaN, and the first 10% (tokens <= 100) dropped: 8 each.
  ASSERT_EQ(points.size(), 16u);
  EXPECT_TRUE(contains(warnings, "1 non-finite loss skipped")) << warnings.size();
  const Point& p = points.front();
  EXPECT_EQ(p.run, dir.path("runs/a"));
  EXPECT_EQ(p.N, 1e6);
  EXPECT_EQ(p.P, 2);
  EXPECT_EQ(p.E, 1);  // the trainer writes experts = 0 for a dense model
  EXPECT_EQ(p.lr, 0.003);
  EXPECT_EQ(p.width, 256);
  EXPECT_EQ(p.D, 200);
  EXPECT_EQ(p.C, 6e6 * 200);
  EXPECT_DOUBLE_EQ(p.loss, 4.8);
  EXPECT_EQ(p.attributes.at("arch"), "dense");

  PointOptions final_only;
  final_only.final_only = true;
  EXPECT_EQ(load_points({dir.path("runs")}, final_only, warnings).size(), 2u);
  PointOptions filtered;
  filtered.filters = {"arch=moe", "lr=1e-3"};  // numbers compare as numbers
  const auto moe = load_points({dir.path("runs")}, filtered, warnings);
  ASSERT_EQ(moe.size(), 8u);
  EXPECT_EQ(moe[0].lr, 0.001);
  filtered.filters = {"arch=dense", "lr=1e-3"};
  EXPECT_TRUE(load_points({dir.path("runs")}, filtered, warnings).empty());
  filtered.drop_first = 0.5;  // tokens <= 500 dropped
  filtered.filters = {};
  EXPECT_EQ(load_points({dir.path("runs/a/trace.h5")}, filtered, warnings).size(), 5u);
}

TEST(Points, ATraceWithoutEvaluationsFallsBackToTrainingLosses) {
  testing::TempDir dir;
  write_run(dir.path("a"), 0.003, "dense", /*with_eval=*/false);
  std::vector<std::string> warnings;
  const auto points = load_points({dir.path("a")}, PointOptions{}, warnings);
  ASSERT_EQ(points.size(), 8u);
  EXPECT_DOUBLE_EQ(points[0].loss, 4.85);
  EXPECT_TRUE(contains(warnings, "no evaluation rows; using training losses"));
}

TEST(Points, BadInputIsAnErrorNamingTheFile) {
  testing::TempDir dir;
  std::vector<std::string> warnings;
  // A damaged file, a foreign HDF5 file, a folder without traces, a missing path.
  testing::write_file(dir.path("bad/trace.h5"), "not hdf5 at all");
  EXPECT_NE(error_of([&] {
              load_points({dir.path("bad")}, {}, warnings);
            }).find(dir.path("bad/trace.h5") + ": not an HDF5 file"),
            std::string::npos);
  fs::create_directories(dir.path("foreign"));
  {
    h5::File f = h5::File::create(dir.path("foreign/trace.h5"));
    h5::set_attr(f, "/", "format", std::string("something-else"));
  }
  EXPECT_NE(error_of([&] {
              load_points({dir.path("foreign")}, {}, warnings);
            }).find("not a ladder trace"),
            std::string::npos);
  fs::create_directories(dir.path("empty"));
  EXPECT_NE(
      error_of([&] { load_points({dir.path("empty")}, {}, warnings); }).find("holds no trace.h5"),
      std::string::npos);
  EXPECT_NE(error_of([&] {
              load_points({dir.path("nope.csv")}, {}, warnings);
            }).find("no such file or folder"),
            std::string::npos);
  PointOptions bad_filter;
  bad_filter.filters = {"arch"};
  EXPECT_NE(error_of([&] {
              load_points({dir.path("empty")}, bad_filter, warnings);
            }).find("expected key=value"),
            std::string::npos);
}

// Kinds of points: a run's and a cooldown's by default; stable-run and averaged-weight points when
// asked; drop_first and final_only per run and kind.
TEST(Points, KindsAreKeptAsAskedAndSeriesArePerRunAndKind) {
  testing::TempDir dir;
  std::vector<std::string> warnings;
  testing::write_file(dir.path("kinds.csv"),
                      "N,D,loss,kind,run\n1e8,1e9,3.3,stable,s\n1e8,2e9,3.2,stable,s\n"
                      "1e8,2e9,3.0,average,s\n1e8,4e9,2.9,average,s\n1e8,2e9,3.1,cooldown,c\n"
                      "2e8,4e9,2.8,run,r\n2e8,4e9,2.7,,plain\n");
  auto kinds = [&](const std::vector<std::string>& asked, bool final_only = false) {
    PointOptions o;
    o.drop_first = 0;
    o.final_only = final_only;
    if (!asked.empty()) o.kinds = asked;
    std::vector<double> losses;
    for (const Point& p : load_points({dir.path("kinds.csv")}, o, warnings))
      losses.push_back(p.loss);
    return losses;
  };
  EXPECT_EQ(kinds({}), (std::vector<double>{3.1, 2.8, 2.7}));  // a blank kind: a run's
  EXPECT_EQ(kinds({"stable"}), (std::vector<double>{3.3, 3.2}));
  EXPECT_EQ(kinds({"stable", "average"}, true), (std::vector<double>{3.2, 2.9}));
  PointOptions wrong;
  wrong.kinds = {"final"};
  EXPECT_NE(error_of([&] {
              load_points({dir.path("kinds.csv")}, wrong, warnings);
            }).find("--kind final: not a kind of point"),
            std::string::npos);
}

TEST(Points, CsvColumnsRunsAndErrors) {
  testing::TempDir dir;
  std::vector<std::string> warnings;
  testing::write_file(dir.path("ok.csv"),
                      "# published points\nN,D,loss,dataset,run\n1e8,2e9,3.1,web,a\n"
                      "1e8,4e9,nan,web,a\n2e8,4e9,2.9,code,b\n\n");
  const auto points = load_points({dir.path("ok.csv")}, PointOptions{}, warnings);
  ASSERT_EQ(points.size(), 2u);
  EXPECT_EQ(points[0].N, 1e8);
  EXPECT_EQ(points[0].D, 2e9);
  EXPECT_EQ(points[0].P, 1);
  EXPECT_TRUE(std::isnan(points[0].C));
  EXPECT_EQ(points[1].run, "b");
  EXPECT_TRUE(contains(warnings, "1 row with a missing or non-finite loss skipped"));
  PointOptions code;
  code.filters = {"dataset=code"};
  EXPECT_EQ(load_points({dir.path("ok.csv")}, code, warnings).size(), 1u);

  testing::write_file(dir.path("noloss.csv"), "N,D,L\n1,2,3\n");
  EXPECT_NE(error_of([&] {
              read_csv(dir.path("noloss.csv"), warnings);
            }).find(dir.path("noloss.csv") + ":1: the header has no loss column"),
            std::string::npos);
  testing::write_file(dir.path("word.csv"), "N,loss\n1e8,3\nabc,3\n");
  EXPECT_NE(error_of([&] {
              read_csv(dir.path("word.csv"), warnings);
            }).find(dir.path("word.csv") + ":3: column N: 'abc' is not a number"),
            std::string::npos);
  testing::write_file(dir.path("short.csv"), "N,loss\n1e8\n");
  EXPECT_NE(error_of([&] {
              read_csv(dir.path("short.csv"), warnings);
            }).find(":2: has 1 cells but the header has 2"),
            std::string::npos);
  testing::write_file(dir.path("empty.csv"), "# nothing\n");
  EXPECT_NE(error_of([&] { read_csv(dir.path("empty.csv"), warnings); }).find("is empty"),
            std::string::npos);
}

}  // namespace
}  // namespace ladder::scaling
