// Shared by the training suites: the bundled corpus prepared once per suite, tiny recipes, the
// `ladder` binary run as a user would (alone or under mpirun), and trace series read back.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "core/hdf5.h"
#include "test_util.h"

namespace ladder {

class TrainingFixture : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new testing::TempDir;
    const auto r =
        testing::run_command(testing::ladder_binary() + " prep --input " + LADDER_SOURCE_DIR +
                             "/data/corpus/brown.txt.gz --out " + dir_->path("ds"));
    ASSERT_EQ(r.status, 0) << r.output;
  }
  static void TearDownTestSuite() { delete dir_; }

  // A recipe for a tiny model; `extra` is appended (sections not used in the base).
  static std::string recipe(const std::string& name, const std::string& extra = "",
                            const std::string& schedule = "kind = \"cosine\"\nwarmup = 2\n") {
    const std::string path = dir_->path(name + ".toml");
    testing::write_file(path, "[run]\nname = \"" + name + "\"\nout_dir = \"" + dir_->path("runs") +
                                  "\"\nseed = 1\n[data]\npath = \"" + dir_->path("ds") +
                                  "\"\nseq_len = 32\n[model]\nd_model = 32\nn_layers = 2\n"
                                  "n_heads = 2\nqk_norm = true\n[schedule]\n" +
                                  schedule + extra);
    return path;
  }
  static std::string run_dir(const std::string& name) { return dir_->path("runs/" + name); }

  // `ladder train` with `threads` threads per rank (one unless asked), in fp32 (flags may set
  // train.precision again: the last --set wins); ranks > 0: under mpirun with that many ranks.
  static testing::CommandResult train(const std::string& recipe_path, const std::string& flags = "",
                                      int ranks = 0, int threads = 1) {
    return testing::run_command(train_command(recipe_path, flags, ranks, threads));
  }
  // Its command line (for a job run in the background).
  static std::string train_command(const std::string& recipe_path, const std::string& flags = "",
                                   int ranks = 0, int threads = 1) {
    return (ranks > 0 ? testing::mpirun(ranks) + " " : std::string()) + testing::ladder_binary() +
           " train " + recipe_path + " --threads " + std::to_string(threads) +
           " --set train.peak_gflops=100 --set train.precision=fp32 " + flags;
  }

  static std::vector<double> series(const std::string& trace, const std::string& name) {
    h5::File f = h5::File::open(trace, false);
    const torch::Tensor t = h5::read_tensor(f, name).to(torch::kFloat64);
    return std::vector<double>(t.data_ptr<double>(), t.data_ptr<double>() + t.numel());
  }

  // A run's training loss, gradient norm and validation loss against a reference run's, row by row.
  static void expect_same_training(const std::string& trace, const std::string& reference,
                                   const std::string& what, double tolerance);

  // The top singular values of every hidden matrix (/spectra) against a reference run's.
  static void expect_same_spectra(const std::string& trace, const std::string& reference,
                                  const std::string& what, double tolerance);

  // A parallel layout of a run: its name, the flags that set it, its ranks.
  struct Layout {
    const char* name;
    const char* flags;
    int ranks;
  };
  // Trains `extra` (recipe text) with `flags` in one process as `reference`, then in each layout,
  // and expects every layout's training to match the one process's within `tolerance`.
  static void expect_layouts_match_one_process(const std::string& reference,
                                               const std::string& extra, const std::string& flags,
                                               const std::vector<Layout>& layouts,
                                               double tolerance) {
    const auto one = train(recipe(reference, extra), flags);
    ASSERT_EQ(one.status, 0) << one.output;
    for (const Layout& l : layouts) {
      const auto r = train(recipe(l.name, extra), flags + " " + l.flags, l.ranks);
      ASSERT_EQ(r.status, 0) << r.output;
      expect_same_training(run_dir(l.name) + "/trace.h5", run_dir(reference) + "/trace.h5", l.name,
                           tolerance);
    }
  }

  static inline testing::TempDir* dir_ = nullptr;
};

// Each a[i] within `tolerance` (relative) of b[i + offset]: a resumed or differently laid out run's
// series against a reference run's. Nothing to compare is a failure: two empty series (a column
// never written) prove nothing.
inline void expect_series_close(const std::vector<double>& a, const std::vector<double>& b,
                                size_t offset, const std::string& what, double tolerance) {
  ASSERT_FALSE(a.empty()) << what << ": no rows to compare";
  ASSERT_EQ(a.size() + offset, b.size()) << what;
  for (size_t i = 0; i < a.size(); ++i)
    EXPECT_LE(std::abs(a[i] - b[i + offset]), tolerance * std::abs(b[i + offset]))
        << what << " row " << i << ": " << a[i] << " vs " << b[i + offset];
}

inline void TrainingFixture::expect_same_training(const std::string& trace,
                                                  const std::string& reference,
                                                  const std::string& what, double tolerance) {
  for (const char* column : {"train/loss", "train/grad_norm", "eval/loss"})
    expect_series_close(series(trace, column), series(reference, column), 0, what + " " + column,
                        tolerance);
}

inline void TrainingFixture::expect_same_spectra(const std::string& trace,
                                                 const std::string& reference,
                                                 const std::string& what, double tolerance) {
  std::vector<std::string> columns;
  {
    h5::File f = h5::File::open(reference, false);
    columns = h5::list_group(f, "spectra");
  }
  ASSERT_GT(columns.size(), 1u) << what;  // step and at least one matrix
  for (const auto& c : columns)
    expect_series_close(series(trace, "spectra/" + c), series(reference, "spectra/" + c), 0,
                        what + " spectra/" + c, tolerance);
}

}  // namespace ladder
