#include "trainer/run/train_step.h"

#include <chrono>
#include <cmath>

#include <spdlog/spdlog.h>

#include "core/error.h"
#include "core/format.h"
#include "data/dataset.h"
#include "models/precision.h"
#include "optim/adamw.h"
#include "optim/schedule.h"
#include "trainer/run/step_graph.h"

namespace ladder {
namespace {

using Clock = std::chrono::steady_clock;

// Forward and backward over this rank's micro-batches, in the order of the pipeline schedule (one
// process: each forward then its backward). Each loss is scaled by 1/step_micro, so the gradients
// summed over the ranks are the global batch's mean. In bf16 the weights are cast once per step
// (the cache lives until the block ends, before the update). Returns the sum of the micro-batches'
// losses on this rank (the last stage's; zero elsewhere), an fp64 scalar on the device.
torch::Tensor forward_backward(RunContext& run, const torch::Tensor& rows,
                               parallel::PipelineStats& stats) {
  const Recipe& r = run.recipe;
  const int64_t seq = r.data.seq_len;
  torch::Tensor loss_sum =
      torch::zeros({}, torch::TensorOptions(torch::kFloat64).device(run.device));
  parallel::PipelineStep work;
  work.microbatches = run.micro;
  work.activation_shape = [&](int64_t) {
    return run.model->activation_shape(r.train.micro_batch, seq);
  };
  work.activation_options = torch::TensorOptions(torch::kFloat32).device(run.device);
  work.forward = [&](int chunk, int64_t m, const torch::Tensor& input) {
    const torch::Tensor batch = rows.narrow(0, m * r.train.micro_batch, r.train.micro_batch);
    const models::Autocast autocast(run.device, run.bf16);
    const models::ChunkOutput out =
        run.model->forward_chunk(chunk, batch.slice(1, 0, seq), batch.slice(1, 1), input);
    if (!run.pipeline.last(chunk)) return out.activation;
    loss_sum += out.loss.loss.detach().to(torch::kFloat64);
    return out.loss.objective / static_cast<double>(run.step_micro);
  };
  work.before_backward = [&](bool last) { run.grads->before_backward(last); };
  const models::WeightCastCache weight_casts;
  stats = run.pipeline.run(work);
  return loss_sum;
}

}  // namespace

torch::Tensor host_rows(RunContext& run, int64_t step) {
  const Recipe& r = run.recipe;
  const int64_t first_row = run.mesh.coord().island * r.train.global_batch +
                            run.mesh.coord().dp * run.micro * r.train.micro_batch;
  const torch::Tensor rows =
      torch::empty({run.micro * r.train.micro_batch, r.data.seq_len + 1},
                   torch::TensorOptions(torch::kInt64).pinned_memory(run.device.is_cuda()));
  run.loader.rows_into(step, first_row, rows);
  return rows;
}

StepOnDevice step_on_device(RunContext& run, const torch::Tensor& rows,
                            parallel::PipelineStats& stats) {
  const Recipe& r = run.recipe;
  run.grads->zero_grad();
  const torch::Tensor loss_sum = forward_backward(run, rows, stats);
  // A tied embedding: the first stage's gradient (from the lookup) and the last stage's (from the
  // readout) are summed between the two, so both copies take the same update.
  for (size_t k : run.tied)
    run.mesh.pipeline_ends().all_reduce(run.values[k].mutable_grad());
  run.grads->finish_grad_sync();
  StepOnDevice out;
  out.norm = run.grad_norm->compute_on_device(run.params());
  // The sync-free update: the clipping divisor and the finite flag from the device (a non-finite
  // norm, the same on every rank, skips it on every rank); AdamW::begin_step wrote the step's
  // numbers before.
  if (r.train.sync_free_step)
    run.optimizer->launch_update(
        {optim::clip_divisor(out.norm, r.optim.grad_clip), optim::found_non_finite({out.norm})});
  // The global batch's mean loss, summed on the device: the last stage's, over dp.
  torch::Tensor loss = loss_sum.reshape({1});
  if (run.mesh.pp().size() > 1) run.mesh.pp().all_reduce(loss);
  run.grads->dense().sum(loss);
  out.loss = loss[0] / static_cast<double>(run.step_micro);
  // Islands clip on their own norm; what is logged, and checked so that every rank stops alike,
  // is the mean over the islands.
  out.shown_norm = out.norm;
  if (run.diloco) {
    torch::Tensor both = torch::stack({out.loss, out.norm});
    run.diloco->agree(both);
    out.loss = both[0] / static_cast<double>(r.parallel.islands);
    out.shown_norm = both[1] / static_cast<double>(r.parallel.islands);
  }
  return out;
}

void require_finite(double value, const std::string& what, int64_t step, int64_t read_after) {
  if (std::isfinite(value)) return;
  const std::string read =
      read_after > step + 1
          ? " (read after step " + std::to_string(read_after) +
                ": the sync-free step is read before a log line, an evaluation or a checkpoint)"
          : "";
  throw AgreedError("train", "step " + std::to_string(step + 1) + ": " + what + " is " +
                                 std::to_string(value) + read +
                                 "; stopping without writing a checkpoint of this state (lower "
                                 "optim.lr, or resume from the last checkpoint)");
}

StepResult train_step(RunContext& run, int64_t step) {
  const Recipe& r = run.recipe;
  const auto start = Clock::now();
  StepResult result;
  // What the layers counted outside training steps (evaluation, spectra) is not the step's.
  run.tp_stats = run.ep_stats = parallel::CommStats{};
  // The update needs the global gradient norm (to clip) and a finite step. The sync-free step
  // (train.sync_free_step) takes both from the device inside step_on_device, and the loop reads
  // the verdict at its next log step (trainer/run/finite_watch.h); a CUDA graph
  // (train.cuda_graph) replays that device part. Otherwise the host reads the norm, then clips
  // and updates.
  const double lr = optim::lr_at(step, r.train.steps, r.optim.lr, r.schedule);
  const bool sync_free = r.train.sync_free_step;
  StepOnDevice out;
  if (run.graph) {
    out = run.graph->run(step, lr, result.pipeline);
  } else {
    if (sync_free) run.optimizer->begin_step(lr);
    torch::Tensor rows = host_rows(run, step);
    // On a GPU from pinned memory, copied without the host waiting; PyTorch's pinned-memory cache
    // hands out another buffer while a copy still reads one, so the next step's rows never
    // overwrite a batch in flight (double buffering without a wait).
    if (run.device.is_cuda()) rows = rows.to(run.device, /*non_blocking=*/true);
    out = step_on_device(run, rows, result.pipeline);
  }
  if (sync_free) {
    run.finite_watch.note(step, out.loss, out.shown_norm);
  } else {
    require_finite(out.loss.item<double>(), "the training loss", step);
    require_finite(out.shown_norm.item<double>(), "the gradient norm", step);
    optim::clip_grads(run.params(), run.optimizer->segments(), out.norm.item<double>(),
                      r.optim.grad_clip);
    run.optimizer->step(lr);
  }
  run.grads->gather_params();
  // Routed layers: the step's counts over every rank that routes different tokens (each tp rank
  // routes the same ones), then the auxiliary-loss-free bias rule, the same on every rank.
  if (torch::Tensor routing = run.model->take_routing_counts(); routing.defined()) {
    run.mesh.pp().all_reduce(routing);
    run.mesh.dp().all_reduce(routing);
    run.model->balance_experts(routing);
    result.routing = routing;
  }
  // DiLoCo: the fragments due exchange pseudo-gradients and take the outer step.
  if (run.diloco) {
    const int64_t outer_before = run.diloco->outer_updates();
    if (run.diloco->after_inner_step(step + 1) && run.reset_inner_state)
      run.optimizer->reset_state();
    result.outer_updates = run.diloco->outer_updates() - outer_before;
    result.island_comm = run.diloco->take_stats();
  }
  if (run.average) run.average->update(run.params());
  result.loss = out.loss, result.grad_norm = out.shown_norm, result.lr = lr;
  result.dp_comm = run.grads->take_stats();
  result.tp_comm = run.tp_stats, result.ep_comm = run.ep_stats;
  result.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  return result;
}

double evaluate(RunContext& run, const data::TokenDataset& val) {
  const Recipe& r = run.recipe;
  // DiLoCo evaluates the global model: the one the islands agree on (and checkpoints hold).
  if (run.diloco) run.diloco->swap_global();
  torch::NoGradGuard no_grad;
  const models::Autocast autocast(run.device, run.bf16);
  const int64_t seq = r.data.seq_len, micro = r.train.micro_batch;
  const int64_t windows = eval_windows(r, val);
  const parallel::Communicator& dp = run.mesh.dp();
  // The dp ranks take alternate micro-batches, each through its pipeline (forwards only), and the
  // sum is reduced on the device (no host round trip per micro-batch; NCCL reduces it on CUDA).
  std::vector<int64_t> firsts;  // this dp rank's micro-batches: their first windows
  for (int64_t first = dp.rank() * micro; first < windows; first += dp.size() * micro)
    firsts.push_back(first);
  // Expert parallelism exchanges rows between dp ranks in every forward: then each rank runs as
  // many forwards as the busiest, the extra ones on the first windows, counted for nothing.
  const auto counted = static_cast<int64_t>(firsts.size());
  if (r.parallel.ep > 1)
    while (static_cast<int64_t>(firsts.size()) * dp.size() * micro < windows)
      firsts.push_back(0);
  auto rows = [&](int64_t m) { return std::min(micro, windows - firsts[m]); };
  torch::Tensor sum = torch::zeros({1}, torch::TensorOptions(torch::kFloat64).device(run.device));
  if (!firsts.empty()) {
    parallel::PipelineStep work;
    work.microbatches = static_cast<int64_t>(firsts.size());
    work.activation_shape = [&](int64_t m) { return run.model->activation_shape(rows(m), seq); };
    work.activation_options = torch::TensorOptions(torch::kFloat32).device(run.device);
    work.forward = [&](int chunk, int64_t m, const torch::Tensor& input) {
      const torch::Tensor batch =
          data::sequential_windows(val, seq, firsts[m], rows(m)).to(run.device);
      const auto out =
          run.model->forward_chunk(chunk, batch.slice(1, 0, seq), batch.slice(1, 1), input);
      if (!run.pipeline.last(chunk)) return out.activation;
      if (m < counted) sum += out.loss.loss.to(torch::kFloat64) * static_cast<double>(rows(m));
      return out.loss.loss;
    };
    run.pipeline.run_forward(work);
  }
  run.mesh.pp().all_reduce(sum);  // the last stage has it
  dp.all_reduce(sum);
  const double loss = sum.item<double>() / static_cast<double>(windows);
  if (run.diloco) run.diloco->swap_global();
  return loss;
}

EvalRecord evaluate_after(RunContext& run, int64_t done) {
  const int64_t tokens = done * run.tokens_per_step;
  EvalRecord record{done, tokens, run.accounting.flops_per_token * static_cast<double>(tokens),
                    evaluate(run, *run.data.val)};
  record.bytes_per_token = run.data.val_bytes_per_token;
  require_finite(record.loss, "the validation loss", done - 1);
  std::string averaged, sets;
  if (run.average) {
    record.average_loss =
        run.average->evaluate_with(run.params(), [&] { return evaluate(run, *run.data.val); });
    averaged =
        fmt::format(" | {} weights {:.4f}", choice_name(kWeightAverageNames, run.average->kind()),
                    record.average_loss);
  }
  for (const EvalSet& set : run.data.eval_sets) {
    record.set_loss.push_back(evaluate(run, *set.dataset));
    record.set_bytes_per_token.push_back(set.bytes_per_token);
    require_finite(record.set_loss.back(), "the loss on eval set " + set.name, done - 1);
    sets += fmt::format(" | {} {:.4f}", set.name, record.set_loss.back());
  }
  spdlog::info("eval step {} | tokens {} | val loss {:.4f}{}{}", done,
               human_count(static_cast<double>(tokens)), record.loss, averaged, sets);
  return record;
}

}  // namespace ladder
