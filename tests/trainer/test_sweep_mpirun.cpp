// A sweep whose runs are jobs of two ranks each (sweep.launch = "mpirun").
#include <filesystem>

#include "test_util.h"
#include "training_fixture.h"

namespace ladder {
namespace {

namespace fs = std::filesystem;

class SweepMpirun : public TrainingFixture {};

TEST_F(SweepMpirun, RunsEachRunAsAJobOfItsRanks) {
  const std::string base = recipe("sweep-mpirun-base",
                                  "[train]\nsteps = 10\nglobal_batch = 8\nmicro_batch = 4\n"
                                  "log_every = 5\n[eval]\nevery_steps = 5\ntokens = 256\n");
  // The launcher as this machine needs it (testing::mpirun without its -np).
  std::string launcher = testing::mpirun(2);
  launcher.replace(launcher.find(" -np 2"), 6, "");
  const std::string path = dir_->path("sweep-mpirun.toml");
  testing::write_file(path, "[sweep]\nname = \"mpirun\"\nrecipe = \"" +
                                fs::path(base).filename().string() + "\"\nout_dir = \"" +
                                dir_->path("sweeps") + "\"\nlaunch = \"mpirun\"\nranks = 2\n" +
                                "mpirun = \"" + launcher + "\"\n[set]\ntrain.precision = " +
                                "\"fp32\"\ntrain.threads = 1\ntrain.peak_gflops = 100\n" +
                                "[grid]\noptim.lr = [0.001, 0.002]\n");
  const auto r = testing::run_command(testing::ladder_binary() + " sweep " + path);
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("-np 2 ladder train"), std::string::npos) << r.output;  // the plan
  EXPECT_NE(r.output.find("2 of 2 runs done"), std::string::npos) << r.output;
  for (const char* run : {"lr=0.001", "lr=0.002"}) {
    const std::string dir = dir_->path("sweeps/mpirun/") + run;
    EXPECT_TRUE(fs::exists(dir + "/console.txt")) << run;
    h5::File f = h5::File::open(dir + "/trace.h5", false);
    EXPECT_EQ(h5::get_int_attr(f, "/", "dp"), 2) << run;
    EXPECT_EQ(series(dir + "/trace.h5", "eval/loss").size(), 2u) << run;
  }
  const std::string index = testing::read_file(dir_->path("sweeps/mpirun/index.csv"));
  EXPECT_NE(index.find("lr=0.002,done,0.002,"), std::string::npos) << index;
}

}  // namespace
}  // namespace ladder
