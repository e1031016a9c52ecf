#include "trainer/run/interval_metrics.h"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "core/format.h"
#include "models/moe.h"

namespace ladder {
namespace {

void add_to(parallel::CommStats& total, const parallel::CommStats& s) {
  total.seconds += s.seconds, total.bytes += s.bytes, total.collectives += s.collectives;
}

}  // namespace

IntervalMetrics::IntervalMetrics(const RunContext& run, double peak_gflops, int64_t start_step)
    : run_(run), peak_gflops_(peak_gflops), start_step_(start_step), loop_start_(Clock::now()) {}

void IntervalMetrics::add(const StepResult& s) {
  busy_ += s.seconds;
  tokens_ += run_.tokens_per_step;
  ++steps_;
  loss_ = s.loss, grad_norm_ = s.grad_norm, lr_ = s.lr;
  add_to(dp_, s.dp_comm), add_to(tp_, s.tp_comm), add_to(ep_, s.ep_comm);
  add_to(island_, s.island_comm);
  pipeline_.seconds += s.pipeline.seconds;
  pipeline_.idle_seconds += s.pipeline.idle_seconds;
  pipeline_.p2p_bytes += s.pipeline.p2p_bytes;
  pipeline_.peak_activation_bytes =
      std::max(pipeline_.peak_activation_bytes, s.pipeline.peak_activation_bytes);
  if (s.routing.defined()) routing_ = routing_.defined() ? routing_ + s.routing : s.routing;
  outer_updates_ += s.outer_updates;
}

void IntervalMetrics::reset() {
  busy_ = 0, tokens_ = 0, steps_ = 0;
  dp_ = tp_ = ep_ = island_ = parallel::CommStats{};
  pipeline_ = parallel::PipelineStats{};
  routing_ = torch::Tensor();
  outer_updates_ = 0;
}

TrainRecord IntervalMetrics::flush(int64_t done, std::vector<std::string>& lines) {
  const Recipe& r = run_.recipe;
  // The only read of the interval's device work outside the finite check: its wait is training.
  const auto read_start = Clock::now();
  const torch::Tensor read = torch::stack({loss_, grad_norm_}).cpu();
  const double loss = read[0].item<double>(), grad_norm = read[1].item<double>();
  busy_ += std::chrono::duration<double>(Clock::now() - read_start).count();
  const int64_t tokens = done * run_.tokens_per_step;
  const double flops_per_token = run_.accounting.flops_per_token;
  const double tokens_per_s = static_cast<double>(tokens_) / busy_;
  const double mfu = flops_per_token * tokens_per_s / (peak_gflops_ * 1e9);
  const double elapsed = std::chrono::duration<double>(Clock::now() - loop_start_).count();
  const double eta =
      elapsed / static_cast<double>(done - start_step_) * static_cast<double>(r.train.steps - done);
  const double n = static_cast<double>(steps_);
  const double step_s = busy_ / n, comm_s = dp_.seconds / n;
  const double comm_bytes = static_cast<double>(dp_.bytes) / n;
  const double tp_comm_s = tp_.seconds / n, tp_comm_bytes = static_cast<double>(tp_.bytes) / n;
  // Every stage's bubble (idle share of its schedule) and activation peak, gathered over pp.
  torch::Tensor mine =
      torch::tensor({pipeline_.bubble(), static_cast<double>(pipeline_.peak_activation_bytes),
                     static_cast<double>(pipeline_.p2p_bytes) / n},
                    torch::kFloat64);
  const torch::Tensor stages = run_.mesh.pp().all_gather(mine).view({-1, 3});
  std::vector<double> stage_bubble, stage_activation_bytes;
  double pp_bytes = 0;
  std::string per_stage;
  for (int64_t i = 0; i < stages.size(0); ++i) {
    stage_bubble.push_back(stages[i][0].item<double>());
    stage_activation_bytes.push_back(stages[i][1].item<double>());
    pp_bytes = std::max(pp_bytes, stages[i][2].item<double>());
    per_stage += fmt::format("{}{:.0f}%/{}B", i ? " " : "", 100 * stage_bubble.back(),
                             human_count(stage_activation_bytes.back()));
  }
  lines.push_back(fmt::format(
      "step {}/{} | tokens {} | loss {:.4f} | lr {:.2e} | grad {:.3f} | {} tok/s | "
      "MFU {:.1f}% | step {:.0f} ms = compute {:.0f} + comm {:.0f} ({}B){}{} | elapsed {} | "
      "ETA {}",
      done, r.train.steps, human_count(tokens), loss, lr_, grad_norm, human_count(tokens_per_s),
      100 * mfu, 1e3 * step_s, 1e3 * (step_s - comm_s), 1e3 * comm_s, human_count(comm_bytes),
      run_.tp.active() ? fmt::format(" | tp comm {:.0f} ms ({}B) inside compute", 1e3 * tp_comm_s,
                                     human_count(tp_comm_bytes))
                       : std::string(),
      r.parallel.pp > 1 ? fmt::format(" | pp bubble/activations per stage {} ({}B p2p)", per_stage,
                                      human_count(pp_bytes))
                        : std::string(),
      format_duration(elapsed), format_duration(eta)));
  TrainRecord record;
  record.set("step", static_cast<double>(done));
  record.set("tokens", static_cast<double>(tokens));
  record.set("flops", flops_per_token * static_cast<double>(tokens));
  record.set("loss", loss);
  record.set("lr", lr_);
  record.set("grad_norm", grad_norm);
  record.set("tokens_per_s", tokens_per_s);
  record.set("mfu", mfu);
  record.set("elapsed_s", elapsed);
  record.set("step_s", step_s);
  record.set("compute_s", step_s - comm_s);
  record.set("comm_s", comm_s);
  record.set("comm_bytes", comm_bytes);
  record.set("tp_comm_s", tp_comm_s);
  record.set("tp_comm_bytes", tp_comm_bytes);
  record.set("pp_p2p_bytes", pp_bytes);
  record.stage_bubble = stage_bubble;
  record.stage_activation_bytes = stage_activation_bytes;
  if (routing_.defined()) {
    const models::RoutingSummary moe = models::summarize_routing(routing_);
    lines.push_back(models::describe_routing(done, moe));
    record.set("moe_aux_loss", moe.aux_loss);
    record.set("moe_z_loss", moe.z_loss);
    record.set("moe_load_max_over_mean", moe.load_max_over_mean);
    record.set("moe_load_cv", moe.load_cv);
    record.set("moe_dropped_fraction", moe.dropped_fraction);
  }
  if (run_.ep.active()) {
    const double ep_comm_s = ep_.seconds / n, ep_comm_bytes = static_cast<double>(ep_.bytes) / n;
    record.set("ep_comm_s", ep_comm_s);
    record.set("ep_comm_bytes", ep_comm_bytes);
    lines.push_back(parallel::describe_expert_parallel_interval(done, ep_comm_s, ep_comm_bytes));
  }
  if (run_.diloco) {
    // Per token of all islands: what this rank sent to the other islands, against an all-reduce
    // of its gradients over them every step (data parallelism on the same ranks).
    const double bytes_per_token =
        static_cast<double>(island_.bytes) / static_cast<double>(tokens_);
    const double dp_bytes_per_token =
        run_.diloco->data_parallel_bytes_per_step() / static_cast<double>(run_.tokens_per_step);
    const double outer_s =
        outer_updates_ > 0 ? island_.seconds / static_cast<double>(outer_updates_) : 0.0;
    record.set("diloco_bytes_per_token", bytes_per_token);
    record.set("diloco_dp_bytes_per_token", dp_bytes_per_token);
    if (outer_updates_ > 0) record.set("diloco_outer_s", outer_s);
    lines.push_back(parallel::describe_diloco_interval(done, outer_updates_, r.diloco.fragments > 1,
                                                       bytes_per_token, dp_bytes_per_token,
                                                       outer_s));
  }
  reset();
  return record;
}

}  // namespace ladder
