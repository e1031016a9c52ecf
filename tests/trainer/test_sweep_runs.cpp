// `ladder sweep` as a user runs it: tiny sweeps trained in the sweep's process, a run that fails
// without stopping the sweep, a sweep killed and started again, a Slurm array (with a stand-in
// srun), and the folder read by `ladder fit`.
#include <signal.h>

#include <chrono>
#include <filesystem>
#include <sstream>
#include <thread>

#include "trainer/run/checkpoint.h"
#include "training_fixture.h"

namespace ladder {
namespace {

namespace fs = std::filesystem;

class SweepRuns : public TrainingFixture {
 protected:
  // A sweep over the fixture's tiny recipe `name`, in fp32 with one thread per run.
  static std::string sweep(const std::string& name, const std::string& axes,
                           const std::string& recipe_extra = "", const std::string& head = "",
                           const std::string& schedule = "kind = \"cosine\"\nwarmup = 2\n") {
    const std::string base = recipe(name + "-base", recipe_extra, schedule);
    const std::string path = dir_->path(name + ".toml");
    testing::write_file(path, "[sweep]\nname = \"" + name + "\"\nrecipe = \"" +
                                  fs::path(base).filename().string() + "\"\nout_dir = \"" +
                                  dir_->path("sweeps") + "\"\n" + head +
                                  "[set]\ntrain.precision = \"fp32\"\ntrain.threads = 1\n"
                                  "train.peak_gflops = 100\n" +
                                  axes);
    return path;
  }
  static std::string sweep_dir(const std::string& name) { return dir_->path("sweeps/" + name); }
  static testing::CommandResult ladder(const std::string& args) {
    return testing::run_command(testing::ladder_binary() + " " + args);
  }
  // The index's rows: run name -> status.
  static std::map<std::string, std::string> statuses(const std::string& name) {
    std::map<std::string, std::string> out;
    std::istringstream in(testing::read_file(sweep_dir(name) + "/index.csv"));
    std::string line;
    std::getline(in, line);
    while (std::getline(in, line)) {
      const size_t a = line.find(',');
      out[line.substr(0, a)] = line.substr(a + 1, line.find(',', a + 1) - a - 1);
    }
    return out;
  }
};

const char* kTiny =
    "[train]\nsteps = 20\nglobal_batch = 4\nmicro_batch = 4\nlog_every = 5\n"
    "[checkpoint]\nevery_steps = 10\n[eval]\nevery_steps = 10\ntokens = 256\n";

TEST_F(SweepRuns, AFailedRunIsRecordedAndTheSweepGoesOn) {
  const std::string path =
      sweep("failing", "[grid]\nmodel.d_model = [32, 64]\ntrain.steps = [20, 30]\n", kTiny);
  const std::string dir = sweep_dir("failing");

  // The plan: four runs with measured estimates, and nothing written.
  const auto plan = ladder("sweep " + path + " --dry-run");
  ASSERT_EQ(plan.status, 0) << plan.output;
  EXPECT_NE(plan.output.find("failing: 4 runs = 2 model.d_model x 2 train.steps"),
            std::string::npos)
      << plan.output;
  EXPECT_NE(plan.output.find("d_model=64_steps=30"), std::string::npos);
  EXPECT_NE(plan.output.find("a step measured on 2 model shapes"), std::string::npos)
      << plan.output;
  EXPECT_FALSE(fs::exists(dir));

  // The second run finds a damaged checkpoint: it fails, the others train.
  const std::string damaged = dir + "/d_model=32_steps=30/checkpoints/step_00000010.h5";
  testing::write_file(damaged, "not an HDF5 file");
  const auto r = ladder("sweep " + path + " --no-estimate");
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("run 2/4 d_model=32_steps=30: FAILED"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("3 of 4 runs done"), std::string::npos) << r.output;
  EXPECT_EQ(statuses("failing"),
            (std::map<std::string, std::string>{{"d_model=32_steps=20", "done"},
                                                {"d_model=32_steps=30", "failed"},
                                                {"d_model=64_steps=20", "done"},
                                                {"d_model=64_steps=30", "done"}}));
  const std::string error = testing::read_file(dir + "/d_model=32_steps=30/error.txt");
  EXPECT_NE(error.find("every checkpoint is damaged: " + damaged + " (cannot be read"),
            std::string::npos)
      << error;
  EXPECT_NE(testing::read_file(dir + "/index.csv").find(damaged), std::string::npos);

  // `ladder fit` takes the folder: the finished runs, with a word on the failed one.
  const auto fit = ladder("fit " + dir + " --law kaplan-n --bootstrap 0 --no-plots --out " +
                          dir_->path("fit-failing"));
  ASSERT_EQ(fit.status, 0) << fit.output;
  EXPECT_NE(fit.output.find("from 3 runs"), std::string::npos) << fit.output;
  EXPECT_NE(fit.output.find("index.csv: 1 run failed, not used"), std::string::npos) << fit.output;

  // With the damage gone (kept aside as *.damaged), the failed run trains and the others are
  // skipped.
  EXPECT_TRUE(fs::exists(damaged + ".damaged"));
  fs::remove(damaged + ".damaged");
  const auto again = ladder("sweep " + path + " --no-estimate");
  EXPECT_EQ(again.status, 0) << again.output;
  EXPECT_NE(again.output.find("run 1/4 d_model=32_steps=20: done, skipped"), std::string::npos);
  EXPECT_NE(again.output.find("run 4/4 d_model=64_steps=30: done, skipped"), std::string::npos);
  EXPECT_NE(again.output.find("4 of 4 runs done (1 run now)"), std::string::npos) << again.output;
  EXPECT_FALSE(fs::exists(dir + "/d_model=32_steps=30/error.txt"));
  for (const auto& [run, status] : statuses("failing"))
    EXPECT_EQ(status, "done") << run;
}

// A batch axis over a recipe whose warm-up is a token count: the plan's probe runs (a few steps,
// no warm-up) do not trip over schedule.warmup_tokens, and each run resolves its own warm-up.
TEST_F(SweepRuns, ABatchSweepWithAWarmupInTokensIsPlannedAndRuns) {
  const std::string path =
      sweep("batches", "[grid]\ntrain.global_batch = [4, 8]\noptim.lr = [0.002, 0.004]\n",
            "[train]\ntokens = 2048\nglobal_batch = 4\nmicro_batch = 4\nlog_every = 2\n"
            "[eval]\nevery_steps = 1000\ntokens = 256\n",
            "", "kind = \"cosine\"\nwarmup_tokens = 512\n");
  const auto plan = ladder("sweep " + path + " --dry-run");
  ASSERT_EQ(plan.status, 0) << plan.output;
  EXPECT_NE(plan.output.find("estimate "), std::string::npos) << plan.output;
  const auto r = ladder("sweep " + path + " --no-estimate");
  ASSERT_EQ(r.status, 0) << r.output;
  for (const auto& [run, status] : statuses("batches"))
    EXPECT_EQ(status, "done") << run;
  // 512 tokens of warm-up: 4 steps of 4 x 32 tokens, 2 steps of 8 x 32.
  const auto check = [&](int batch) {
    return ladder("train " + dir_->path("batches-base.toml") +
                  " --check --set train.global_batch=" + std::to_string(batch));
  };
  EXPECT_NE(check(4).output.find("warmup = 0  # derived: 4\n"), std::string::npos)
      << check(4).output;
  EXPECT_NE(check(8).output.find("warmup = 0  # derived: 2\n"), std::string::npos)
      << check(8).output;
}

// Mixture weights as a sweep axis, each run evaluated on two sets, then `ladder fit --law mixture`
// over the sweep folder: the plan measures one shape (the weights do not change a step) and its
// probe leaves the eval sets out with the evaluations.
TEST_F(SweepRuns, AMixtureSweepFeedsTheMixtureLaw) {
  const std::string path = sweep(
      "mixtures",
      "[[zip]]\ndata.weights = [[1.0, 0.0], [0.75, 0.25], [0.5, 0.5], [0.0, 1.0], [0.25, 0.75], "
      "[0.6, 0.4]]\nmix = [1, 2, 3, 4, 5, 6]\n",
      "[train]\nsteps = 8\nglobal_batch = 4\nmicro_batch = 4\nlog_every = 4\n"
      "[eval]\nevery_steps = 8\ntokens = 256\nsets = [\"press\", \"learned\"]\n",
      "run_name = \"m{mix}\"\n");
  // The base recipe mixes press and learned.
  const std::string base = dir_->path("mixtures-base.toml");
  std::string recipe_text = testing::read_file(base);
  recipe_text.replace(recipe_text.find("seq_len = 32\n"), 13,
                      "seq_len = 32\nmixture = [\"press\", \"learned\"]\nweights = [1.0, 1.0]\n");
  testing::write_file(base, recipe_text);
  const auto plan = ladder("sweep " + path + " --dry-run");
  ASSERT_EQ(plan.status, 0) << plan.output;
  EXPECT_NE(plan.output.find("a step measured on 1 model shape"), std::string::npos) << plan.output;
  const auto r = ladder("sweep " + path + " --no-estimate");
  ASSERT_EQ(r.status, 0) << r.output;
  const auto fit = ladder("fit " + sweep_dir("mixtures") +
                          " --law mixture --holdout 1 --bootstrap 10 --no-plots --out " +
                          dir_->path("fit-mixtures"));
  ASSERT_EQ(fit.status, 0) << fit.output;
  EXPECT_NE(fit.output.find("6 runs (1 held out"), std::string::npos) << fit.output;
  EXPECT_NE(fit.output.find("held out " + sweep_dir("mixtures") + "/m6 (press 0.6, learned 0.4)"),
            std::string::npos)
      << fit.output;
  const std::string json = testing::read_file(dir_->path("fit-mixtures/fit.json"));
  for (const char* key : {"\"t_press\"", "\"optimum\"", "\"held_out\"", "\"learned\""})
    EXPECT_NE(json.find(key), std::string::npos) << key << "\n" << json;
}

TEST_F(SweepRuns, AKilledSweepResumesWhereItStopped) {
  const std::string extra =
      "[train]\nsteps = 300\nglobal_batch = 4\nmicro_batch = 4\nlog_every = 10\n"
      "[checkpoint]\nevery_steps = 20\nkeep = 2\n[eval]\nevery_steps = 100\ntokens = 256\n";
  const std::string path = sweep("killed", "[grid]\noptim.lr = [0.001, 0.002, 0.003]\n", extra);
  const std::string dir = sweep_dir("killed");
  const std::string second = dir + "/lr=0.002";

  // Start the sweep in the background and kill it (SIGKILL: nothing is tidied up) once the second
  // run has written a checkpoint.
  const auto started =
      testing::run_command(testing::ladder_binary() + " sweep " + path + " --no-estimate > " +
                           dir_->path("killed.log") + " 2>&1 & echo $!");
  const pid_t pid = std::stoi(started.output);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (checkpoint_steps(second).empty() && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  ::kill(pid, SIGKILL);
  ASSERT_FALSE(checkpoint_steps(second).empty()) << testing::read_file(dir_->path("killed.log"));
  ASSERT_LT(checkpoint_steps(second).back(), 300) << "the run finished before it was killed";
  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // the process is gone
  EXPECT_EQ(statuses("killed").at("lr=0.002"), "running");      // as the index was left

  const auto r = ladder("sweep " + path + " --no-estimate");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("run 1/3 lr=0.001: done, skipped"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("run 2/3 lr=0.002: N="), std::string::npos);
  EXPECT_NE(r.output.find(", resuming at step "), std::string::npos) << r.output;
  for (const auto& [run, status] : statuses("killed"))
    EXPECT_EQ(status, "done") << run;

  // The resumed run's losses are those of the run trained without interruption (bitwise in fp32).
  const std::string reference = sweep("killed-reference", "[grid]\noptim.lr = [0.002]\n", extra);
  ASSERT_EQ(ladder("sweep " + reference + " --no-estimate").status, 0);
  expect_same_training(second + "/trace.h5", sweep_dir("killed-reference") + "/run/trace.h5",
                       "resumed sweep run", 0.0);
}

TEST_F(SweepRuns, SlurmArrayTasksRunTheRunsAndTheIndexFollows) {
  const std::string path = sweep("slurm", "[grid]\noptim.lr = [0.001, 0.002]\n", kTiny);
  const std::string dir = sweep_dir("slurm");
  const auto w = ladder("sweep " + path + " --slurm");
  ASSERT_EQ(w.status, 0) << w.output;
  const std::string script = dir + "/slurm/array.sbatch";
  const auto syntax = testing::run_command("bash -n " + script);
  EXPECT_EQ(syntax.status, 0) << syntax.output;
  const std::string text = testing::read_file(script);
  EXPECT_NE(text.find("#SBATCH --array=0-1\n"), std::string::npos) << text;
  EXPECT_NE(text.find("#SBATCH --ntasks=1\n"), std::string::npos);
  const std::string jobs = testing::read_file(dir + "/slurm/jobs.tsv");
  EXPECT_EQ(std::count(jobs.begin(), jobs.end(), '\n'), 2);
  EXPECT_NE(jobs.find(" train "), std::string::npos);
  EXPECT_NE(jobs.find("--set optim.lr=0.002"), std::string::npos) << jobs;
  EXPECT_NE(jobs.find(" --resume auto"), std::string::npos);

  // Array task 1 under a stand-in srun that runs its command as one task.
  testing::write_file(dir_->path("bin/srun"), "#!/bin/sh\nexec \"$@\"\n");
  fs::permissions(dir_->path("bin/srun"), fs::perms::owner_all);
  const auto task = testing::run_command("PATH=" + dir_->path("bin") +
                                         ":$PATH SLURM_ARRAY_TASK_ID=1 bash " + script);
  ASSERT_EQ(task.status, 0) << task.output;
  EXPECT_TRUE(fs::exists(dir + "/lr=0.002/console.txt"));
  const auto status = ladder("sweep " + path + " --status");
  ASSERT_EQ(status.status, 0) << status.output;
  EXPECT_EQ(statuses("slurm"),
            (std::map<std::string, std::string>{{"lr=0.001", "pending"}, {"lr=0.002", "done"}}));
  // Written again, the list holds only the run left.
  ASSERT_EQ(ladder("sweep " + path + " --slurm").status, 0);
  const std::string left = testing::read_file(dir + "/slurm/jobs.tsv");
  EXPECT_EQ(std::count(left.begin(), left.end(), '\n'), 1);
  EXPECT_NE(left.find("optim.lr=0.001"), std::string::npos);

  // launch/slurm-sweep.sh writes the script and hands it to sbatch with the user's options.
  testing::write_file(dir_->path("bin/sbatch"),
                      "#!/bin/sh\necho \"$@\" > " + dir_->path("sbatch-args") + "\n");
  fs::permissions(dir_->path("bin/sbatch"), fs::perms::owner_all);
  const auto submit = testing::run_command(
      "PATH=" + dir_->path("bin") + ":$PATH LADDER=" + testing::ladder_binary() + " " +
      LADDER_SOURCE_DIR + "/launch/slurm-sweep.sh " + path + " --partition=debug --time=10");
  ASSERT_EQ(submit.status, 0) << submit.output;
  EXPECT_EQ(testing::read_file(dir_->path("sbatch-args")),
            "--partition=debug --time=10 " + fs::absolute(script).string() + "\n");
}

// [cooldown]: the runs of each size share one stable run; each is a cooldown branched from it.
const char* kCooldownTiny =
    "[train]\nsteps = 20\nglobal_batch = 4\nmicro_batch = 4\nlog_every = 5\n"
    "[checkpoint]\nevery_steps = 10\nkeep = 2\n[eval]\nevery_steps = 5\ntokens = 256\n";
const char* kCooldownAxes =
    "[grid]\nmodel.d_model = [32, 48]\ntrain.steps = [40, 80, 160]\n"
    "[cooldown]\nfraction = 0.25\nshape = \"1-sqrt\"\n";

// The index's rows as maps of column -> cell.
std::vector<std::map<std::string, std::string>> index_rows(const std::string& dir) {
  std::istringstream in(testing::read_file(dir + "/index.csv"));
  std::string line;
  std::vector<std::string> header;
  std::vector<std::map<std::string, std::string>> rows;
  while (std::getline(in, line)) {
    std::vector<std::string> cells;
    std::istringstream cs(line);
    for (std::string c; std::getline(cs, c, ',');)
      cells.push_back(c);
    if (line.back() == ',') cells.emplace_back();
    if (header.empty()) {
      header = cells;
      continue;
    }
    std::map<std::string, std::string> row;
    for (size_t c = 0; c < header.size() && c < cells.size(); ++c)
      row[header[c]] = cells[c];
    rows.push_back(row);
  }
  return rows;
}

TEST_F(SweepRuns, ACooldownSweepSharesOneStableRunPerSize) {
  // At a learning rate high enough that the stable run's loss is held up by its noise, a cooldown
  // brings it down. (Within their first ~20 steps these tiny models still descend fast, and a
  // lower rate only slows them: measured, a 20-step cooldown from 15 ended 0.03 above the stable
  // run at 20.)
  const std::string path = sweep("cooldown",
                                 "optim.lr = 0.03\neval.average = \"ema\"\neval.ema_decay = 0.9\n" +
                                     std::string(kCooldownAxes),
                                 kCooldownTiny);
  const std::string dir = sweep_dir("cooldown");

  // The plan: a stable run per size to the last branch point (160 - 40 = 120), the cooldowns
  // from 30, 60 and 120, and what the sweep spends against independent runs.
  // (Measured estimates too: their probe runs turn eval.average off with the evaluations.)
  const auto plan = ladder("sweep " + path + " --dry-run");
  ASSERT_EQ(plan.status, 0) << plan.output;
  for (const char* expected :
       {"stable_d_model=32", "stable_d_model=48", "30 60 120; pending", "(from s1 at step 30)",
        "(from s2 at step 120)", "in 2 stable runs and", "a step measured on 2 model shapes"})
    EXPECT_NE(plan.output.find(expected), std::string::npos) << expected << "\n" << plan.output;

  const auto r = ladder("sweep " + path + " --no-estimate");
  ASSERT_EQ(r.status, 0) << r.output;
  const auto rows = index_rows(dir);
  ASSERT_EQ(rows.size(), 6u);  // one per run, as without [cooldown]
  double spent = 0, independent = 0;
  for (const auto& row : rows) {
    EXPECT_EQ(row.at("status"), "done") << row.at("run");
    const double c = std::stod(row.at("C")), s = std::stod(row.at("flops_spent"));
    EXPECT_LT(s, c) << row.at("run");
    spent += s, independent += c;
    const int steps = std::stoi(row.at("steps"));
    const int branch = steps - steps / 4;
    EXPECT_EQ(row.at("branched_from"),
              "stable_d_model=" + row.at("model.d_model") + "@" + std::to_string(branch));
    // A cooldown's final validation loss lies below the stable run's at the same step.
    const std::string stable = dir + "/stable_d_model=" + row.at("model.d_model") + "/trace.h5";
    const auto stable_steps = series(stable, "eval/step"),
               stable_loss = series(stable, "eval/loss");
    const auto own = series(dir + "/" + row.at("run") + "/trace.h5", "eval/loss");
    for (size_t k = 0; k < stable_steps.size(); ++k)
      if (stable_steps[k] == steps) EXPECT_LT(own.back(), stable_loss[k]) << row.at("run");
    h5::File f = h5::File::open(dir + "/" + row.at("run") + "/trace.h5", false);
    EXPECT_EQ(h5::get_int_attr(f, "/", "branch_step"), branch) << row.at("run");
  }
  // The stable runs cost 120 steps of each size, the cooldowns 10 + 20 + 40: 190 of 280 steps.
  EXPECT_NEAR(spent / independent, 190.0 / 280.0, 1e-9);

  // `ladder fit` reads the runs, not the stable runs.
  const auto fit = ladder("fit " + dir +
                          " --final-only --law kaplan-n --bootstrap 0 --no-plots "
                          "--out " +
                          dir_->path("fit-cooldown"));
  ASSERT_EQ(fit.status, 0) << fit.output;
  EXPECT_NE(fit.output.find("from 6 runs"), std::string::npos) << fit.output;
  // Or the stable runs' own points, or the averaged weights' of every run (scaling/points.h).
  for (const auto& [kind, runs] : {std::pair{"stable", 2}, std::pair{"average", 8}}) {
    const auto k = ladder("fit " + dir + " --kind " + kind +
                          " --law kaplan-n --bootstrap 0 --no-plots --out " +
                          dir_->path(std::string("fit-cooldown-") + kind));
    ASSERT_EQ(k.status, 0) << k.output;
    EXPECT_NE(k.output.find("from " + std::to_string(runs) + " runs"), std::string::npos)
        << k.output;
  }

  // Resumed part way through the stable run (its checkpoints after 60 lost) and part way through
  // a cooldown (its last one lost): the same losses, bitwise.
  const std::string stable = dir + "/stable_d_model=32", longest = dir + "/d_model=32_steps=160";
  const auto stable_before = series(stable + "/trace.h5", "train/loss");
  const auto longest_before = series(longest + "/trace.h5", "train/loss");
  for (const int64_t step : checkpoint_steps(stable))
    if (step > 60) fs::remove(checkpoint_path(stable, step));
  fs::remove(checkpoint_path(longest, 160));
  EXPECT_EQ(statuses("cooldown").at("d_model=32_steps=160"), "done");  // as the index was left
  const auto again = ladder("sweep " + path + " --no-estimate");
  ASSERT_EQ(again.status, 0) << again.output;
  EXPECT_NE(again.output.find("stable run 2/2 stable_d_model=48: done, skipped"), std::string::npos)
      << again.output;
  EXPECT_NE(again.output.find("d_model=32_steps=160: N="), std::string::npos) << again.output;
  EXPECT_NE(again.output.find("6 of 6 runs done (1 run now)"), std::string::npos) << again.output;
  EXPECT_EQ(series(stable + "/trace.h5", "train/loss"), stable_before);
  EXPECT_EQ(series(longest + "/trace.h5", "train/loss"), longest_before);

  // A Slurm array: the stable runs first; a cooldown waits for its branch point's checkpoint.
  fs::remove(checkpoint_path(longest, 160));
  ASSERT_EQ(ladder("sweep " + path + " --slurm").status, 0);
  const std::string jobs = testing::read_file(dir + "/slurm/jobs.tsv");
  EXPECT_EQ(std::count(jobs.begin(), jobs.end(), '\n'), 1) << jobs;
  EXPECT_NE(jobs.find("\t" + fs::absolute(checkpoint_path(stable, 120)).string() + "\t"),
            std::string::npos)
      << jobs;
  EXPECT_NE(jobs.find("--branch-from " + fs::absolute(checkpoint_path(stable, 120)).string()),
            std::string::npos)
      << jobs;
  EXPECT_EQ(testing::run_command("bash -n " + dir + "/slurm/array.sbatch").status, 0);
}

TEST_F(SweepRuns, AFailedStableRunMarksItsCooldownsAndTheyRunOnceItSucceeds) {
  const std::string path = sweep("cooldown-fail", kCooldownAxes, kCooldownTiny);
  const std::string dir = sweep_dir("cooldown-fail");
  // The stable run of d_model 32 finds a damaged checkpoint and fails; the other size trains.
  const std::string damaged = dir + "/stable_d_model=32/checkpoints/step_00000010.h5";
  testing::write_file(damaged, "not an HDF5 file");
  const auto r = ladder("sweep " + path + " --no-estimate");
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("stable run 1/2 stable_d_model=32: FAILED"), std::string::npos)
      << r.output;
  const auto s = statuses("cooldown-fail");
  for (const char* run : {"d_model=32_steps=40", "d_model=32_steps=80", "d_model=32_steps=160"}) {
    EXPECT_EQ(s.at(run), "failed") << run;
    EXPECT_NE(testing::read_file(dir + "/" + run + "/error.txt")
                  .find("ladder: error: its stable run stable_d_model=32 failed: "),
              std::string::npos)
        << run;
  }
  for (const char* run : {"d_model=48_steps=40", "d_model=48_steps=80", "d_model=48_steps=160"})
    EXPECT_EQ(s.at(run), "done") << run;
  // With the damage gone (kept aside as *.damaged), the stable run and its cooldowns run.
  fs::remove(damaged + ".damaged");
  const auto again = ladder("sweep " + path + " --no-estimate");
  ASSERT_EQ(again.status, 0) << again.output;
  for (const auto& [run, status] : statuses("cooldown-fail"))
    EXPECT_EQ(status, "done") << run;
  EXPECT_FALSE(fs::exists(dir + "/d_model=32_steps=40/error.txt"));
}

TEST_F(SweepRuns, ACooldownGroupThatSharesNoStablePhaseIsRefused) {
  // A warm-up derived from the length differs between the runs of one size.
  const std::string warmup = sweep(
      "cooldown-warmup",
      std::string(kCooldownAxes) + "[derive]\nschedule.warmup = \"round(train.steps / 10)\"\n",
      kCooldownTiny);
  const auto r = ladder("sweep " + warmup + " --dry-run --no-estimate");
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_NE(r.output.find("[cooldown]: runs d_model=32_steps=40 and d_model=32_steps=80 differ "
                          "only in their length, so they share a stable run, but "
                          "schedule.warmup differs: 4 and 8"),
            std::string::npos)
      << r.output;
  // [cooldown] owns the schedule's kind and decay.
  const std::string kind = sweep(  // the line lands in the helper's [set]
      "cooldown-kind", "schedule.kind = \"cosine\"\n" + std::string(kCooldownAxes), kCooldownTiny);
  const auto k = ladder("sweep " + kind + " --dry-run --no-estimate");
  EXPECT_EQ(k.status, 2) << k.output;
  EXPECT_NE(k.output.find("schedule.kind: set by [cooldown]"), std::string::npos) << k.output;
}

}  // namespace
}  // namespace ladder
