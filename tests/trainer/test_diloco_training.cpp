// DiLoCo training with the `ladder` binary under mpirun (fp32), against a reference written here:
// the islands simulated as replicas in this process, each with its own AdamW on its rows of every
// step, and the outer loop (pseudo-gradients averaged, Nesterov SGD, restart or mix) written out
// plainly. Layouts inside the islands (dp, tp) must not change the result; streaming fragments with
// overlap and quantised pseudo-gradients follow their own references; resume is bitwise at and
// between outer steps.
#include <gtest/gtest.h>

#include <filesystem>

#include "core/hdf5.h"
#include "data/dataset.h"
#include "data/loader.h"
#include "models/model.h"
#include "optim/adamw.h"
#include "optim/parametrization.h"
#include "optim/schedule.h"
#include "parallel/diloco.h"
#include "trainer/recipe/recipe.h"
#include "trainer/run/checkpoint.h"
#include "trainer/training_fixture.h"

namespace ladder {
namespace {

class DilocoTraining : public TrainingFixture {};

constexpr double kTolerance = 1e-5;  // the bound (fp32, 12 inner steps)

// 12 inner steps: three outer steps of H = 4.
const char* kDiloco12 =
    "[parallel]\nislands = 2\n"
    "[train]\nsteps = 12\nglobal_batch = 4\nmicro_batch = 2\nlog_every = 1\n"
    "[checkpoint]\nevery_steps = 0\nintermediate = \"none\"\n[eval]\nevery_steps = 0\n"
    "[diloco]\ninner_steps = 4\n";

// The reference run: per step the loss averaged over the islands, and the final global parameters
// in ParamStore order.
struct Reference {
  std::vector<double> losses;
  std::vector<std::string> names;
  std::vector<torch::Tensor> params;
};

Reference reference_diloco(const std::string& recipe_path, int islands,
                           const std::vector<std::string>& overrides = {}) {
  torch::NoGradGuard outer_no_grad;  // re-enabled around each backward below
  RecipeOptions options;
  options.overrides = overrides;
  options.world_size = islands;
  const Recipe r = load_recipe(recipe_path, options);
  const auto& d = r.diloco;
  torch::set_num_threads(1);
  auto dataset = std::make_shared<data::TokenDataset>(r.data.path, "train");
  const int64_t seq = r.data.seq_len, batch = r.train.global_batch, steps = r.train.steps;
  data::DataLoader loader(dataset, seq, islands * batch, static_cast<uint64_t>(r.run.seed));
  const optim::RuleInputs inputs =
      optim::rule_inputs(r.mup, r.optim, r.model, batch * seq, steps * batch * seq);

  struct Island {
    std::unique_ptr<models::Model> model;
    std::unique_ptr<optim::AdamW> adamw;
  };
  std::vector<Island> replicas;
  for (int i = 0; i < islands; ++i) {
    Island island;
    // Built as the trainer builds them (trainer/run/run_context.cpp), kernels included.
    island.model = models::build_model(r.model, dataset->meta().vocab_size, seq, {}, {}, {},
                                       r.train.fused_kernels);
    const auto settings = optim::param_settings(island.model->params().all(), inputs);
    optim::initialize(island.model->params(), settings, static_cast<uint64_t>(r.run.seed));
    island.adamw = std::make_unique<optim::AdamW>(island.model->params(), r.optim, settings,
                                                  optim::AdamWKernels{r.train.fused_kernels});
    replicas.push_back(std::move(island));
  }
  auto flat = [](models::Model& m) {
    std::vector<torch::Tensor> pieces;
    for (const auto& p : m.params().all())
      pieces.push_back(p.value.detach().reshape(-1));
    return torch::cat(pieces);
  };
  auto set_flat = [](models::Model& m, int64_t begin, const torch::Tensor& values) {
    int64_t offset = 0;
    for (auto& p : m.params().all()) {
      const int64_t n = p.value.numel();
      const int64_t a = std::max(begin, offset);
      const int64_t b = std::min(begin + values.numel(), offset + n);
      if (a < b)
        p.value.detach()
            .view(-1)
            .narrow(0, a - offset, b - a)
            .copy_(values.narrow(0, a - begin, b - a));
      offset += n;
    }
  };
  torch::Tensor global = flat(*replicas[0].model).clone();
  torch::Tensor momentum = torch::zeros_like(global);
  const int64_t n = global.numel(), fragments = d.fragments, h = d.inner_steps;
  const parallel::PseudoGradDtype dtype = d.pseudo_grad_dtype;
  // The islands' pseudo-gradients of [a, b) averaged as they would arrive.
  auto averaged_delta = [&](int64_t a, int64_t b) {
    torch::Tensor sum;
    for (auto& island : replicas) {
      torch::Tensor delta = global.narrow(0, a, b - a) - flat(*island.model).narrow(0, a, b - a);
      if (dtype != parallel::PseudoGradDtype::Fp32) {
        torch::Tensor bytes = torch::empty({parallel::encoded_bytes(dtype, b - a)}, torch::kUInt8);
        parallel::encode_pseudo_grad(delta, dtype, bytes);
        delta = parallel::decode_pseudo_grad(bytes, dtype, b - a);
      }
      sum = sum.defined() ? sum + delta : delta;
    }
    return sum / static_cast<double>(islands);
  };
  auto outer_update = [&](int64_t a, int64_t b, const torch::Tensor& delta, bool mix) {
    torch::Tensor m = momentum.narrow(0, a, b - a), theta = global.narrow(0, a, b - a);
    m.mul_(d.outer_momentum).add_(delta);
    theta.sub_(delta.add(m, d.outer_momentum), d.outer_lr);
    for (auto& island : replicas) {
      const torch::Tensor local = flat(*island.model).narrow(0, a, b - a);
      set_flat(*island.model, a, mix ? local.mul(d.mixing).add_(theta, 1.0 - d.mixing) : theta);
    }
  };
  struct Pending {
    int64_t fragment, apply_after;
    torch::Tensor delta;
  };
  std::vector<Pending> pending;
  std::vector<int64_t> clean_at(static_cast<size_t>(fragments), 0);
  auto bounds = [&](int64_t f) { return std::pair{n * f / fragments, n * (f + 1) / fragments}; };

  Reference out;
  const int64_t micro = batch / r.train.micro_batch;
  for (int64_t step = 0; step < steps; ++step) {
    double loss = 0;
    for (int i = 0; i < islands; ++i) {
      models::Model& model = *replicas[i].model;
      models::ParamStore& store = model.params();
      for (auto& p : store.all())
        if (p.value.grad().defined()) p.value.mutable_grad().zero_();
      model.set_objective_scale(1.0 / static_cast<double>(micro));
      double island_loss = 0;
      for (int64_t m = 0; m < micro; ++m) {
        const torch::Tensor rows =
            loader.rows(step, i * batch + m * r.train.micro_batch, r.train.micro_batch);
        torch::AutoGradMode grad(true);
        const models::ChunkOutput o =
            model.forward_chunk(0, rows.slice(1, 0, seq), rows.slice(1, 1), torch::Tensor());
        island_loss += o.loss.loss.item<double>();
        (o.loss.objective / static_cast<double>(micro)).backward();
      }
      const auto whole = optim::whole_params(store);
      const double norm = std::sqrt(optim::grad_square_sum(store, whole));
      optim::clip_grads(store, whole, norm, r.optim.grad_clip);
      replicas[i].adamw->step(optim::lr_at(step, steps, r.optim.lr, r.schedule));
      loss += island_loss / static_cast<double>(micro);
    }
    out.losses.push_back(loss / islands);

    const int64_t done = step + 1;
    bool applied = false;
    for (int64_t f = 0; f < fragments; ++f) {
      const int64_t shift = f * h / fragments;
      if (done >= shift && (done - shift) % h == 0 && done < steps) {
        const auto [a, b] = bounds(f);
        pending.push_back({f, std::min(done + d.overlap_steps, steps), averaged_delta(a, b)});
      }
    }
    for (size_t k = 0; k < pending.size();) {
      if (pending[k].apply_after > done) {
        ++k;
        continue;
      }
      const auto [a, b] = bounds(pending[k].fragment);
      outer_update(a, b, pending[k].delta, d.overlap_steps > 0);
      if (d.overlap_steps == 0) clean_at[pending[k].fragment] = done;
      pending.erase(pending.begin() + static_cast<std::ptrdiff_t>(k));
      applied = true;
    }
    if (done == steps)
      for (int64_t f = 0; f < fragments; ++f) {
        if (clean_at[f] == done) continue;
        const auto [a, b] = bounds(f);
        outer_update(a, b, averaged_delta(a, b), false);
        applied = true;
      }
    if (applied && d.inner_state == parallel::InnerState::Reset)
      for (auto& island : replicas)
        island.adamw->reset_state();
  }
  int64_t offset = 0;
  for (const auto& p : replicas[0].model->params().all()) {
    out.names.push_back(p.name);
    out.params.push_back(global.narrow(0, offset, p.value.numel()).view(p.shape));
    offset += p.value.numel();
  }
  return out;
}

// The run's losses and its last checkpoint's (global) parameters against the reference.
void expect_matches_reference(const std::string& run_dir, const Reference& ref,
                              const std::string& what, double tolerance) {
  {
    h5::File trace = h5::File::open(run_dir + "/trace.h5", false);
    const torch::Tensor losses = h5::read_tensor(trace, "train/loss").to(torch::kFloat64);
    expect_series_close(
        std::vector<double>(losses.data_ptr<double>(), losses.data_ptr<double>() + losses.numel()),
        ref.losses, 0, what + " train/loss", tolerance);
  }
  const auto path = newest_checkpoint(run_dir);
  ASSERT_TRUE(path.has_value()) << what;
  h5::File f = h5::File::open(*path, false);
  for (size_t k = 0; k < ref.names.size(); ++k) {
    const torch::Tensor stored = h5::read_tensor(f, "params/" + ref.names[k]);
    const double scale = ref.params[k].abs().max().item<double>();
    EXPECT_LE((stored - ref.params[k]).abs().max().item<double>(), tolerance * scale)
        << what << " " << ref.names[k];
  }
}

}  // namespace

// The reference above, against the binary's runs in several layouts inside the islands.
TEST_F(DilocoTraining, TwoIslandsMatchTheReferenceInEveryLayout) {
  const Reference ref = reference_diloco(recipe("dl_ref", kDiloco12), 2);
  for (const Layout& l : std::vector<Layout>{
           {"dl_islands2", "", 2}, {"dl_dp2", "", 4}, {"dl_tp2", "--set parallel.tp=2", 4}}) {
    const auto r = train(recipe(l.name, kDiloco12), l.flags, l.ranks);
    ASSERT_EQ(r.status, 0) << r.output;
    expect_matches_reference(run_dir(l.name), ref, l.name, kTolerance);
  }
  // The log and trace say what crossed between islands: an fp32 all-reduce of every parameter
  // every 4 steps, a quarter of what data parallelism over the islands would send.
  const std::string trace = run_dir("dl_islands2") + "/trace.h5";
  double sent = 0, data_parallel = 0;
  for (double b : series(trace, "train/diloco_bytes_per_token"))
    sent += b;
  for (double b : series(trace, "train/diloco_dp_bytes_per_token"))
    data_parallel += b;
  EXPECT_NEAR(sent / data_parallel, 0.25, 0.0025);
  h5::File f = h5::File::open(trace, false);
  EXPECT_EQ(h5::get_int_attr(f, "/", "islands"), 2);
  EXPECT_EQ(h5::get_int_attr(f, "/", "diloco_inner_steps"), 4);
}

// H = 1, outer lr 1 and no momentum over one island is plain training.
TEST_F(DilocoTraining, OneIslandEveryStepWithOuterLrOneIsPlainTraining) {
  const char* plain =
      "[train]\nsteps = 8\nglobal_batch = 4\nmicro_batch = 2\nlog_every = 1\n"
      "[checkpoint]\nevery_steps = 0\nintermediate = \"none\"\n[eval]\nevery_steps = 4\n"
      "tokens = 256\n";
  ASSERT_EQ(train(recipe("dl_plain", plain)).status, 0);
  const auto r = train(recipe("dl_m1", plain),
                       "--set diloco.single_island=true --set diloco.inner_steps=1 "
                       "--set diloco.outer_lr=1 --set diloco.outer_momentum=0");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("DiLoCo: 1 island"), std::string::npos) << r.output;
  expect_same_training(run_dir("dl_m1") + "/trace.h5", run_dir("dl_plain") + "/trace.h5", "M = 1",
                       1e-6);
}

// Streaming: two fragments on staggered steps, exchanges overlapping one inner step and mixed in;
// and compressed pseudo-gradients, each against the reference with the same rules.
TEST_F(DilocoTraining, StreamingAndQuantisedPseudoGradientsMatchTheirReferences) {
  const std::vector<std::pair<std::string, std::vector<std::string>>> variants = {
      {"dl_stream", {"diloco.fragments=2", "diloco.overlap_steps=1", "diloco.mixing=0.5"}},
      {"dl_int4", {"diloco.pseudo_grad_dtype=int4", "diloco.inner_state=reset"}},
      {"dl_int8_stream", {"diloco.pseudo_grad_dtype=int8", "diloco.fragments=4"}}};
  for (const auto& [name, sets] : variants) {
    const std::string path = recipe(name, kDiloco12);
    const Reference ref = reference_diloco(path, 2, sets);
    std::string flags;
    for (const auto& s : sets)
      flags += " --set " + s;
    const auto r = train(path, flags, 2);
    ASSERT_EQ(r.status, 0) << r.output;
    expect_matches_reference(run_dir(name), ref, name, kTolerance);
  }
  // Quantised pseudo-gradients travel in fewer bytes: int4 is 4 bits and a scale per 128 values.
  double sent = 0, data_parallel = 0;
  for (double b : series(run_dir("dl_int4") + "/trace.h5", "train/diloco_bytes_per_token"))
    sent += b;
  for (double b : series(run_dir("dl_int4") + "/trace.h5", "train/diloco_dp_bytes_per_token"))
    data_parallel += b;
  // Per sync each rank sends (islands - 1) x (n / 2 + 4 n / 128) bytes, data parallelism
  // 2 (islands - 1) / islands x 4 n per step: the ratio is (0.5 + 4 / 128) / (4 x 4) at H = 4.
  EXPECT_NEAR(sent / data_parallel, (0.5 + 4.0 / 128) / 16, 0.002);
}

// A run cut at an outer step, in the middle of an inner phase, and with an exchange in flight,
// continues bit for bit: the cut run is the whole run's folder with only the checkpoint of the cut
// (as after a crash), resumed.
TEST_F(DilocoTraining, ResumeIsBitwiseAtAndBetweenOuterSteps) {
  namespace fs = std::filesystem;
  const std::string streaming =
      " --set diloco.fragments=2 --set diloco.overlap_steps=1 --set checkpoint.every_steps=1 "
      "--set checkpoint.keep=20";
  ASSERT_EQ(train(recipe("dl_full", kDiloco12), streaming, 2).status, 0);
  const auto reference = series(run_dir("dl_full") + "/trace.h5", "train/loss");
  ASSERT_EQ(reference.size(), 12u);
  // After step 4 fragment 0 has just synchronised; after 5 both are mid-phase; after 6 fragment
  // 1's exchange (started after step 6) is in flight.
  for (int64_t at : {4, 5, 6}) {
    const std::string name = "dl_cut" + std::to_string(at);
    fs::copy(run_dir("dl_full"), run_dir(name), fs::copy_options::recursive);
    for (int64_t s : checkpoint_steps(run_dir(name)))
      if (s != at) fs::remove(checkpoint_path(run_dir(name), s));
    const auto r = train(recipe(name, kDiloco12), streaming + " --resume auto", 2);
    ASSERT_EQ(r.status, 0) << r.output;
    EXPECT_NE(r.output.find("resumed from"), std::string::npos) << r.output;
    const auto resumed = series(run_dir(name) + "/trace.h5", "train/loss");
    ASSERT_EQ(resumed.size(), reference.size()) << name;
    for (size_t i = 0; i < reference.size(); ++i)
      EXPECT_EQ(resumed[i], reference[i]) << name << " row " << i;  // bitwise
  }
}

// Inside the islands a checkpoint reshards like any other: one written at islands 2 x dp 2 with
// ZeRO-1, in the middle of an inner phase, resumes at islands 2 x tp 2 and at islands 2 alone and
// continues the 2-rank run's losses.
TEST_F(DilocoTraining, CheckpointsReshardInsideTheIslands) {
  const std::string every6 = " --set checkpoint.every_steps=6 --set checkpoint.keep=5";
  ASSERT_EQ(train(recipe("dl_rs_ref", kDiloco12), "", 2).status, 0);
  const auto reference = series(run_dir("dl_rs_ref") + "/trace.h5", "train/loss");
  const auto zero = train(recipe("dl_rs_zero", kDiloco12), "--set optim.zero=1" + every6, 4);
  ASSERT_EQ(zero.status, 0) << zero.output;
  const std::string checkpoint = checkpoint_path(run_dir("dl_rs_zero"), 6);
  for (const Layout& l :
       std::vector<Layout>{{"dl_rs_tp2", "--set parallel.tp=2", 4}, {"dl_rs_islands2", "", 2}}) {
    const auto r =
        train(recipe(l.name, kDiloco12), std::string(l.flags) + " --resume " + checkpoint, l.ranks);
    ASSERT_EQ(r.status, 0) << r.output;
    expect_series_close(series(run_dir(l.name) + "/trace.h5", "train/loss"), reference, 6, l.name,
                        kTolerance);
  }
}

// Checkpoints keep their number of islands; a plain run cannot take one over (nor the reverse).
TEST_F(DilocoTraining, CheckpointsResumeOnlyWithTheirIslands) {
  const std::string path = recipe("dl_ck", kDiloco12);
  ASSERT_EQ(train(path, "", 2).status, 0);
  const std::string checkpoint = checkpoint_path(run_dir("dl_ck"), 12);
  const auto inspect = testing::run_command(testing::ladder_binary() + " inspect " + checkpoint);
  ASSERT_EQ(inspect.status, 0) << inspect.output;
  EXPECT_NE(inspect.output.find("diloco islands     2: params/ is the global model"),
            std::string::npos)
      << inspect.output;
  const auto plain =
      train(recipe("dl_ck_plain", kDiloco12), "--set parallel.islands=1 --resume " + checkpoint, 2);
  EXPECT_EQ(plain.status, 2);
  EXPECT_NE(plain.output.find("was written by a DiLoCo run of 2 islands"), std::string::npos)
      << plain.output;
  // Its global model starts a new run.
  const auto init = train(recipe("dl_ck_init", kDiloco12),
                          "--set parallel.islands=1 --init-from " + checkpoint, 2);
  EXPECT_EQ(init.status, 0) << init.output;
}

}  // namespace ladder
