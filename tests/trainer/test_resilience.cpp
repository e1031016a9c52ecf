// Fault drills: runs that are preempted, killed, cut off mid-checkpoint, given a damaged checkpoint
// or a full disk, and what each must leave behind (docs/training.md, "Surviving the cluster"):
// nothing lost, the newest sound checkpoint resumed, the uninterrupted run's losses reproduced
// bitwise (fp32 on the CPU), and one clear message when the run cannot go on.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>

#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "test_util.h"
#include "trainer/run/checkpoint.h"
#include "trainer/training_fixture.h"

namespace ladder {
namespace {

namespace fs = std::filesystem;
using testing::BackgroundCommand;
using testing::run_command;
using testing::wait_until;

class Resilience : public TrainingFixture {
 protected:
  // Whether the job's output shows that step `step` is done ("step 12/200 |").
  static bool reached(const BackgroundCommand& job, int step) {
    return job.output().find("step " + std::to_string(step) + "/") != std::string::npos;
  }
  static void expect_bitwise_same_losses(const std::string& run, const std::string& reference) {
    for (const char* s : {"train/step", "train/loss", "train/grad_norm", "eval/loss"})
      EXPECT_EQ(series(run_dir(run) + "/trace.h5", s), series(run_dir(reference) + "/trace.h5", s))
          << run << " " << s;
  }
  static std::string verify(const std::string& path) {
    return testing::ladder_binary() + " inspect --verify " + path;
  }
};

// Long enough (in steps) for a signal to land mid-run; a cosine schedule, so that a resumed run
// reproduces the whole schedule's losses only if it restores everything.
const char* kLongRun =
    "[train]\nsteps = 300\nglobal_batch = 4\nmicro_batch = 2\nlog_every = 1\n"
    "[checkpoint]\nevery_steps = 1000\nintermediate = \"none\"\nkeep = 2\n[eval]\nevery_steps = "
    "50\n"
    "tokens = 256\n";

TEST_F(Resilience, SigtermStopsAfterAStepWithACheckpointAndResumesBitwise) {
  ASSERT_EQ(train(recipe("sigterm_whole", kLongRun)).status, 0);
  const std::string cut = recipe("sigterm_cut", kLongRun);
  BackgroundCommand job(train_command(cut));
  ASSERT_TRUE(wait_until([&] { return reached(job, 20); }, 120)) << job.output();
  job.signal(SIGTERM);
  ASSERT_EQ(job.wait(120), 3) << job.output();  // kExitStoppedBySignal
  EXPECT_NE(job.output().find("stopped by SIGTERM after step"), std::string::npos) << job.output();
  const auto steps = checkpoint_steps(run_dir("sigterm_cut"));
  ASSERT_EQ(steps.size(), 1u);
  EXPECT_GE(steps[0], 20);
  EXPECT_LT(steps[0], 300) << "the signal came too late to test anything";
  const auto resumed = train(cut, "--resume auto");
  ASSERT_EQ(resumed.status, 0) << resumed.output;
  EXPECT_NE(resumed.output.find("resumed from"), std::string::npos) << resumed.output;
  expect_bitwise_same_losses("sigterm_cut", "sigterm_whole");
}

// Under mpirun (the Slurm path: `--signal=USR1`, mpirun forwards SIGUSR1 to every rank), two
// data-parallel ranks stop at the same step and mpirun ends with their status.
TEST_F(Resilience, Sigusr1ToMpirunStopsEveryRankAtTheSameStep) {
  ASSERT_EQ(train(recipe("usr1_whole", kLongRun), "", 2).status, 0);
  const std::string cut = recipe("usr1_cut", kLongRun);
  BackgroundCommand job(train_command(cut, "", 2));
  ASSERT_TRUE(wait_until([&] { return reached(job, 20); }, 120)) << job.output();
  job.signal(SIGUSR1);
  ASSERT_EQ(job.wait(120), 3) << job.output();
  EXPECT_NE(job.output().find("stopped by SIGUSR1 after step"), std::string::npos) << job.output();
  ASSERT_EQ(checkpoint_steps(run_dir("usr1_cut")).size(), 1u);
  const auto resumed = train(cut, "--resume auto", 2);
  ASSERT_EQ(resumed.status, 0) << resumed.output;
  expect_bitwise_same_losses("usr1_cut", "usr1_whole");
}

// kill -9 of one rank: the job ends within 60 s, and the newest checkpoint finishes the run with
// the uninterrupted losses.
TEST_F(Resilience, KilledRankEndsTheJobAndTheNewestCheckpointFinishesTheRun) {
  const std::string extra =
      "[train]\nsteps = 200\nglobal_batch = 4\nmicro_batch = 2\nlog_every = 1\n"
      "[checkpoint]\nevery_steps = 10\nintermediate = \"none\"\nkeep = 2\n"
      "[eval]\nevery_steps = 50\ntokens = 256\n";
  ASSERT_EQ(train(recipe("kill9_whole", extra), "", 2).status, 0);
  const std::string cut = recipe("kill9_cut", extra);
  BackgroundCommand job(train_command(cut, "", 2));
  ASSERT_TRUE(wait_until([&] { return reached(job, 25); }, 120)) << job.output();
  // mpirun's children are the ranks: kill one of them.
  const auto ranks = run_command("pgrep -P " + std::to_string(job.pid()));
  const std::string victim = ranks.output.substr(0, ranks.output.find('\n'));
  ASSERT_FALSE(victim.empty()) << ranks.output;
  ASSERT_EQ(::kill(std::stoi(victim), SIGKILL), 0);
  const auto killed_at = std::chrono::steady_clock::now();
  const int status = job.wait(60);
  EXPECT_NE(status, -2) << "the job did not end within 60 s of a rank's death\n" << job.output();
  EXPECT_NE(status, 0);
  const double ended_after =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - killed_at).count();
  EXPECT_LT(ended_after, 60.0);
  std::printf("the job ended %.2f s after one of its ranks was killed\n", ended_after);
  ASSERT_FALSE(checkpoint_steps(run_dir("kill9_cut")).empty());
  const auto resumed = train(cut, "--resume auto", 2);
  ASSERT_EQ(resumed.status, 0) << resumed.output;
  expect_bitwise_same_losses("kill9_cut", "kill9_whole");
}

// kill -9 while a checkpoint is being written: the file in progress never takes a checkpoint's
// name, the previous checkpoint stays sound, and the run resumes from it.
TEST_F(Resilience, KillDuringACheckpointWriteLeavesThePreviousOneSound) {
  // A model whose checkpoint (about 40 MB) takes a while to write.
  const std::string extra =
      "[train]\nsteps = 12\nglobal_batch = 2\nmicro_batch = 2\nlog_every = 1\n"
      "[checkpoint]\nevery_steps = 2\nintermediate = \"none\"\nkeep = 3\n[eval]\nevery_steps = 0\n";
  const std::string wide = "--set model.d_model=256 --set model.n_layers=4 --set model.n_heads=4";
  ASSERT_EQ(train(recipe("midwrite_whole", extra), wide).status, 0);
  const std::string cut = recipe("midwrite_cut", extra);
  const fs::path folder = run_dir("midwrite_cut") + "/checkpoints";
  BackgroundCommand job(train_command(cut, wide));
  // Past the first checkpoint, then the moment the next one is being written.
  ASSERT_TRUE(wait_until([&] { return reached(job, 3); }, 120)) << job.output();
  const auto writing = [&] {
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(folder, ec))
      if (e.path().extension() == ".tmp") return true;
    return false;
  };
  ASSERT_TRUE(wait_until(writing, 120)) << "never saw a checkpoint being written\n" << job.output();
  job.signal(SIGKILL);
  ASSERT_EQ(job.wait(60), -1);
  const auto steps = checkpoint_steps(run_dir("midwrite_cut"));
  ASSERT_FALSE(steps.empty());
  const auto sound = run_command(verify(run_dir("midwrite_cut")));
  EXPECT_EQ(sound.status, 0) << sound.output;
  const auto resumed = train(cut, wide + " --resume auto");
  ASSERT_EQ(resumed.status, 0) << resumed.output;
  EXPECT_NE(
      resumed.output.find("resumed from " + checkpoint_path(run_dir("midwrite_cut"), steps.back())),
      std::string::npos)
      << resumed.output;
  EXPECT_NE(resumed.output.find("unfinished checkpoint file"), std::string::npos) << resumed.output;
  expect_bitwise_same_losses("midwrite_cut", "midwrite_whole");
}

const char* kEight =
    "[train]\nsteps = 8\nglobal_batch = 4\nmicro_batch = 2\nlog_every = 1\n"
    "[checkpoint]\nevery_steps = 2\nintermediate = \"none\"\nkeep = 10\n[eval]\nevery_steps = 4\n"
    "tokens = 256\n";

// The newest checkpoint cut short, the one before it with a flipped byte: --resume auto says so,
// keeps both (renamed *.damaged) and continues from the one before them.
TEST_F(Resilience, DamagedCheckpointsAreReportedKeptAndSkipped) {
  const std::string path = recipe("damaged", kEight);
  ASSERT_EQ(train(path).status, 0);
  const std::string whole = run_dir("damaged") + "/whole_trace.h5";
  fs::copy_file(run_dir("damaged") + "/trace.h5", whole);
  const std::string eight = checkpoint_path(run_dir("damaged"), 8);
  const std::string six = checkpoint_path(run_dir("damaged"), 6);
  EXPECT_EQ(run_command(verify(six)).status, 0);
  fs::resize_file(eight, fs::file_size(eight) / 2);
  {
    std::fstream f(six, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(fs::file_size(six) / 2));
    char byte = 0;
    f.read(&byte, 1);
    f.seekp(static_cast<std::streamoff>(fs::file_size(six) / 2));
    byte = static_cast<char>(byte ^ 0x5a);
    f.write(&byte, 1);
  }
  const auto flipped = run_command(verify(six));
  EXPECT_EQ(flipped.status, 2) << flipped.output;
  EXPECT_NE(flipped.output.find("DAMAGED"), std::string::npos) << flipped.output;
  EXPECT_NE(flipped.output.find("ladder: error: " + six + ": damaged"), std::string::npos)
      << flipped.output;
  const auto folder = run_command(verify(run_dir("damaged")));
  EXPECT_EQ(folder.status, 2) << folder.output;
  EXPECT_NE(folder.output.find("2 of 4 checkpoints are damaged"), std::string::npos)
      << folder.output;

  const auto resumed = train(path, "--resume auto");
  ASSERT_EQ(resumed.status, 0) << resumed.output;
  EXPECT_NE(resumed.output.find(eight + " is damaged"), std::string::npos) << resumed.output;
  EXPECT_NE(resumed.output.find(six + " is damaged"), std::string::npos) << resumed.output;
  EXPECT_NE(resumed.output.find("resumed from " + checkpoint_path(run_dir("damaged"), 4)),
            std::string::npos)
      << resumed.output;
  EXPECT_TRUE(fs::exists(eight + ".damaged"));
  EXPECT_TRUE(fs::exists(six + ".damaged"));
  for (const char* s : {"train/step", "train/loss", "eval/loss"})
    EXPECT_EQ(series(run_dir("damaged") + "/trace.h5", s), series(whole, s)) << s;
  EXPECT_EQ(run_command(verify(run_dir("damaged"))).status, 0);  // the rewritten 6 and 8
}

// A kill in the middle of a trace append leaves trace.h5 unreadable: the resume restores it from
// the copy written with the last checkpoint and continues with the uninterrupted run's rows.
TEST_F(Resilience, ADamagedTraceIsRestoredFromTheCopyOfTheLastCheckpoint) {
  const std::string path = recipe("torn_trace", kEight);
  ASSERT_EQ(train(path).status, 0);
  const std::string trace = run_dir("torn_trace") + "/trace.h5";
  const std::string whole = run_dir("torn_trace") + "/whole_trace.h5";
  fs::copy_file(trace, whole);
  EXPECT_TRUE(fs::exists(trace + ".bak"));
  // The run "crashed" after step 7: no checkpoint 8, and a torn trace.
  fs::remove(checkpoint_path(run_dir("torn_trace"), 8));
  fs::resize_file(trace, 1000);
  const auto resumed = train(path, "--resume auto");
  ASSERT_EQ(resumed.status, 0) << resumed.output;
  EXPECT_NE(resumed.output.find(trace + " cannot be read"), std::string::npos) << resumed.output;
  EXPECT_NE(resumed.output.find("restored from " + trace + ".bak"), std::string::npos)
      << resumed.output;
  EXPECT_TRUE(fs::exists(trace + ".damaged"));
  for (const char* s : {"train/step", "train/loss", "eval/loss", "checkpoints/step"})
    EXPECT_EQ(series(trace, s), series(whole, s)) << s;
  // Without a copy, the message says so.
  fs::remove(checkpoint_path(run_dir("torn_trace"), 8));
  fs::remove(trace + ".bak");
  fs::resize_file(trace, 1000);
  const auto refused = train(path, "--resume auto");
  EXPECT_EQ(refused.status, 2) << refused.output;
  EXPECT_NE(refused.output.find("has no backup"), std::string::npos) << refused.output;
}

// A file-size limit below a checkpoint's size, set on the running job (after MPI's start-up,
// whose shared-memory files it would also refuse): the next checkpoint is refused before it is
// written; the run stops with one message, leaves no partial file and keeps the earlier checkpoint
// sound.
TEST_F(Resilience, AFileSizeLimitEndsInAClearErrorAndKeepsTheEarlierOnes) {
  const std::string path = recipe("full_disk", kLongRun);
  // Wide enough that half a checkpoint is more than the trace's size.
  BackgroundCommand job(train_command(path,
                                      "--set model.d_model=128 --set checkpoint.every_steps=150 "
                                      "--set 'checkpoint.intermediate=[5]'"));
  const std::string five = checkpoint_path(run_dir("full_disk"), 5);
  ASSERT_TRUE(wait_until([&] { return reached(job, 10) && fs::exists(five); }, 120))
      << job.output();
  const rlimit limit{fs::file_size(five) / 2, fs::file_size(five) / 2};
  ASSERT_EQ(::prlimit(job.pid(), RLIMIT_FSIZE, &limit, nullptr), 0);
  EXPECT_EQ(job.wait(120), 2) << job.output();
  const std::string output = job.output();
  const std::string failed = checkpoint_path(run_dir("full_disk"), 150);
  EXPECT_NE(output.find("ladder: error: " + failed + ": not written: "), std::string::npos)
      << output;
  EXPECT_NE(output.find("file-size limit"), std::string::npos) << output;
  EXPECT_NE(output.find("the earlier checkpoints are intact"), std::string::npos) << output;
  EXPECT_EQ(checkpoint_steps(run_dir("full_disk")), (std::vector<int64_t>{5}));
  EXPECT_FALSE(fs::exists(failed + ".tmp"));
  const auto sound = run_command(verify(five));
  EXPECT_EQ(sound.status, 0) << sound.output;
}

// Under mpirun with the limit on one rank only: every rank learns it before anything is written
// (a write failing on some ranks only could leave HDF5's collective close waiting forever), and
// the job ends with that rank's message, once, and status 2.
TEST_F(Resilience, AFileSizeLimitOnOneRankEndsEveryRankWithOneMessage) {
  const std::string path = recipe("one_rank_full", kLongRun);
  BackgroundCommand job(train_command(path,
                                      "--set model.d_model=128 --set train.steps=3000 "
                                      "--set checkpoint.every_steps=1000 "
                                      "--set 'checkpoint.intermediate=[5]'",
                                      2));
  const std::string five = checkpoint_path(run_dir("one_rank_full"), 5);
  ASSERT_TRUE(wait_until([&] { return reached(job, 10) && fs::exists(five); }, 120))
      << job.output();
  const auto ranks = run_command("pgrep -P " + std::to_string(job.pid()));
  const std::string second = ranks.output.substr(ranks.output.find('\n') + 1);
  ASSERT_FALSE(second.empty()) << ranks.output;
  const rlimit limit{fs::file_size(five) / 2, fs::file_size(five) / 2};
  ASSERT_EQ(::prlimit(std::stoi(second), RLIMIT_FSIZE, &limit, nullptr), 0);
  EXPECT_EQ(job.wait(120), 2) << job.output();
  const std::string output = job.output();
  const std::string failed = checkpoint_path(run_dir("one_rank_full"), 1000);
  const std::string message = "ladder: error: " + failed + ": not written: ";
  EXPECT_NE(output.find(message), std::string::npos) << output;
  EXPECT_EQ(output.find(message), output.rfind(message)) << "one message\n" << output;
  EXPECT_NE(output.find("rank 1: the process's file-size limit (ulimit -f) is"), std::string::npos)
      << output;
  EXPECT_EQ(checkpoint_steps(run_dir("one_rank_full")), (std::vector<int64_t>{5}));
  EXPECT_FALSE(fs::exists(failed + ".tmp"));
  const auto sound = run_command(verify(five));
  EXPECT_EQ(sound.status, 0) << sound.output;
}

// A small file system (a tmpfs mounted for the drill; root only) fills up: the checkpoint that no
// longer fits is refused before it is written, with the sizes, and the earlier ones stay sound.
TEST_F(Resilience, AFullFileSystemStopsTheRunBeforeTheCheckpointThatDoesNotFit) {
  const std::string mount = dir_->path("small_disk");
  fs::create_directories(mount);
  if (::geteuid() != 0 || run_command("mount -t tmpfs -o size=40m tmpfs " + mount).status != 0)
    GTEST_SKIP() << "mounting a tmpfs needs root";
  struct Unmount {
    std::string at;
    ~Unmount() { run_command("umount " + at); }
  } unmount{mount};
  // Checkpoints of about 5.6 MB every 2 steps, none removed: the free space runs out.
  const auto r =
      train(recipe("small_disk", kEight),
            "--set run.out_dir='" + mount + "' --set model.d_model=128 --set train.steps=40");
  EXPECT_EQ(r.status, 2) << r.output;
  const std::string run = mount + "/small_disk";
  const auto steps = checkpoint_steps(run);
  ASSERT_GE(steps.size(), 2u) << r.output;
  const std::string refused = checkpoint_path(run, steps.back() + 2);
  EXPECT_NE(r.output.find("ladder: error: " + refused + ": not written: "), std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("free, a checkpoint needs"), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(refused + ".tmp"));
  const auto sound = run_command(verify(run));
  EXPECT_EQ(sound.status, 0) << sound.output;
}

TEST(CheckpointSpace, ARunRefusesToWriteWhatTheDiskCannotHold) {
  testing::TempDir dir;
  EXPECT_NO_THROW(check_free_space(dir.path(), 1 << 20));
  try {
    check_free_space(dir.path(), int64_t{1} << 60);  // an exabyte
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.where(), dir.path());
    EXPECT_NE(e.detail().find("free, a checkpoint needs"), std::string::npos) << e.detail();
  }
}

// The launcher loop for machines without Slurm: a crash (the process killed) is retried with
// --resume auto and the run finishes with the uninterrupted losses; a user error is not retried.
TEST_F(Resilience, TrainUntilDoneRestartsAfterACrashAndStopsOnAUserError) {
  ASSERT_EQ(train(recipe("loop_whole", kLongRun)).status, 0);
  const std::string cut = recipe("loop_cut", kLongRun);
  const std::string script = std::string(LADDER_SOURCE_DIR) + "/launch/train-until-done.sh";
  const std::string env = "LADDER=" + testing::ladder_binary() + " RESTART_DELAY=0 MAX_RESTARTS=2 ";
  const std::string flags =
      " --threads 1 --set train.peak_gflops=100 --set train.precision=fp32 --set "
      "checkpoint.every_steps=10";
  BackgroundCommand loop("env " + env + script + " " + cut + flags);
  ASSERT_TRUE(wait_until([&] { return reached(loop, 25); }, 120)) << loop.output();
  const auto ladder = run_command("pgrep -P " + std::to_string(loop.pid()));
  ASSERT_EQ(::kill(std::stoi(ladder.output), SIGKILL), 0) << ladder.output;
  ASSERT_EQ(loop.wait(120), 0) << loop.output();
  EXPECT_NE(loop.output().find("restart 1 of 2"), std::string::npos) << loop.output();
  expect_bitwise_same_losses("loop_cut", "loop_whole");

  const auto bad = run_command("env " + env + script + " " + cut + " --set model.d_model=-1");
  EXPECT_EQ(bad.status, 2) << bad.output;
  EXPECT_NE(bad.output.find("not retrying"), std::string::npos) << bad.output;
  EXPECT_EQ(bad.output.find("restart 1"), std::string::npos) << bad.output;
}

}  // namespace
}  // namespace ladder
