// The quickstart recipe's trace against traces recorded by an earlier build of the trainer: every
// train row (step, tokens, FLOPs, loss, lr, gradient norm) and every eval row (step, tokens,
// FLOPs, loss), in one process (fp32) and on 2 ranks (dp = 2, bf16). On the machine the reference
// was recorded on (the same CPU model and vector extensions) they must be equal bit for bit: a
// change to the trainer's code that is meant to keep its behaviour keeps its numbers. Elsewhere
// other matrix-product kernels round differently, so the rows are compared within a tolerance
// and the test says so.
//
// The references (tests/trainer/reference/*.csv, hex floats) are recorded with
//   LADDER_RECORD_REFERENCE=1 build/tests/test_data_parallel_training
//   --gtest_filter='TraceReference*'
// only when a change is meant to alter the numbers; the closing note of that change says why.
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "trainer/training_fixture.h"

namespace ladder {
namespace {

// What decides the rounding of a run besides ladder's code: the CPU model and the vector
// extensions that LibTorch's products and ladder's kernels dispatch on.
std::string machine_fingerprint() {
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::string line, model, flags;
  while (std::getline(cpuinfo, line)) {
    if (model.empty() && line.rfind("model name", 0) == 0) model = line.substr(line.find(':') + 2);
    if (flags.empty() && line.rfind("flags", 0) == 0)
      flags = " " + line.substr(line.find(':') + 1) + " ";
  }
  std::string isa;
  for (const char* f :
       {"avx2", "fma", "avx512f", "avx512bw", "avx512_bf16", "amx_tile", "amx_bf16"})
    if (flags.find(" " + std::string(f) + " ") != std::string::npos) isa += std::string(" ") + f;
  return model + " |" + isa;
}

struct Rows {
  std::string fingerprint;
  std::vector<std::vector<double>> train, eval;  // step, tokens, flops, loss[, lr, grad_norm]
};

const std::vector<std::string> kTrainColumns = {"step", "tokens", "flops",
                                                "loss", "lr",     "grad_norm"};
const std::vector<std::string> kEvalColumns = {"step", "tokens", "flops", "loss"};

Rows read_trace(const std::string& trace) {
  Rows rows;
  auto table = [&](const std::string& group, const std::vector<std::string>& columns) {
    std::vector<std::vector<double>> out;
    for (size_t c = 0; c < columns.size(); ++c) {
      h5::File f = h5::File::open(trace, false);
      const torch::Tensor t = h5::read_tensor(f, group + "/" + columns[c]).to(torch::kFloat64);
      const std::vector<double> s(t.data_ptr<double>(), t.data_ptr<double>() + t.numel());
      out.resize(s.size(), std::vector<double>(columns.size()));
      for (size_t i = 0; i < s.size(); ++i)
        out[i][c] = s[i];
    }
    return out;
  };
  rows.train = table("train", kTrainColumns);
  rows.eval = table("eval", kEvalColumns);
  return rows;
}

void write_reference(const std::string& path, const Rows& rows) {
  std::ofstream out(path);
  out << "# ladder trace reference (tests/trainer/test_trace_reference.cpp); hex floats\n";
  out << "machine," << rows.fingerprint << "\n";
  char buffer[64];
  for (const auto& [kind, table] : {std::pair{"train", &rows.train}, std::pair{"eval", &rows.eval}})
    for (const auto& row : *table) {
      out << kind;
      for (double v : row) {
        std::snprintf(buffer, sizeof buffer, "%a", v);
        out << ',' << buffer;
      }
      out << '\n';
    }
}

Rows read_reference(const std::string& path) {
  Rows rows;
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << path;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::stringstream ss(line);
    std::string kind, cell;
    std::getline(ss, kind, ',');
    if (kind == "machine") {
      std::getline(ss, rows.fingerprint);
      continue;
    }
    std::vector<double> row;
    while (std::getline(ss, cell, ','))
      row.push_back(std::strtod(cell.c_str(), nullptr));
    (kind == "train" ? rows.train : rows.eval).push_back(row);
  }
  return rows;
}

class TraceReference : public TrainingFixture {
 protected:
  // Trains the quickstart recipe (30 steps: 3 log rows, 2 evaluations) and compares its trace with
  // the reference `name`, or records it (LADDER_RECORD_REFERENCE=1).
  void expect_matches_reference(const std::string& name, const std::string& flags, int ranks,
                                double tolerance) {
    const std::string recipe = std::string(LADDER_SOURCE_DIR) + "/recipes/quickstart.toml";
    const auto r = testing::run_command(
        (ranks > 0 ? testing::mpirun(ranks) + " " : std::string()) + testing::ladder_binary() +
        " train " + recipe + " --threads 1 --set run.out_dir=" + dir_->path("runs") +
        " --set run.name=" + name + " --set data.path=" + dir_->path("ds") +
        " --set train.steps=30 --set eval.every_steps=15 --set checkpoint.intermediate=none " +
        flags);
    ASSERT_EQ(r.status, 0) << r.output;
    Rows rows = read_trace(run_dir(name) + "/trace.h5");
    rows.fingerprint = machine_fingerprint();
    ASSERT_EQ(rows.train.size(), 3u);
    ASSERT_EQ(rows.eval.size(), 2u);
    const std::string path =
        std::string(LADDER_SOURCE_DIR) + "/tests/trainer/reference/" + name + ".csv";
    if (const char* record = std::getenv("LADDER_RECORD_REFERENCE"); record && *record == '1') {
      write_reference(path, rows);
      GTEST_SKIP() << "recorded " << path;
    }
    const Rows reference = read_reference(path);
    const bool same_machine = reference.fingerprint == rows.fingerprint;
    if (!same_machine)
      std::printf("[ note ] %s was recorded on '%s'; this is '%s': comparing within %g\n",
                  name.c_str(), reference.fingerprint.c_str(), rows.fingerprint.c_str(), tolerance);
    auto compare = [&](const auto& got, const auto& want, const std::vector<std::string>& columns,
                       const std::string& kind) {
      ASSERT_EQ(got.size(), want.size()) << kind;
      for (size_t i = 0; i < got.size(); ++i)
        for (size_t c = 0; c < columns.size(); ++c) {
          const std::string what =
              name + " " + kind + " row " + std::to_string(i) + " " + columns[c];
          if (same_machine)
            EXPECT_EQ(got[i][c], want[i][c]) << what << " (bitwise, same machine)";
          else
            EXPECT_LE(std::abs(got[i][c] - want[i][c]), tolerance * std::abs(want[i][c])) << what;
        }
    };
    compare(rows.train, reference.train, kTrainColumns, "train");
    compare(rows.eval, reference.eval, kEvalColumns, "eval");
  }
};

TEST_F(TraceReference, QuickstartOneProcessFp32) {
  expect_matches_reference("quickstart_1rank_fp32", "--set train.precision=fp32", 0, 1e-4);
}

TEST_F(TraceReference, QuickstartTwoRanksBf16) {
  expect_matches_reference("quickstart_2ranks_bf16", "--set train.precision=bf16", 2, 2e-2);
}

}  // namespace
}  // namespace ladder
