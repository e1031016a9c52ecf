// The loss trace (DESIGN.md contract 6): runs/NAME/trace.h5, the fitter's only input.
//
//   /train/{step, tokens, flops, loss, lr, grad_norm, tokens_per_s, mfu, elapsed_s,
//           step_s, compute_s, comm_s, comm_bytes, tp_comm_s, tp_comm_bytes, pp_p2p_bytes,
//           ep_comm_s, ep_comm_bytes, moe_aux_loss, moe_z_loss, moe_load_max_over_mean,
//           moe_load_cv, moe_dropped_fraction (NaN without routed layers),
//           diloco_bytes_per_token, diloco_dp_bytes_per_token, diloco_outer_s (NaN without
//           DiLoCo), stage_bubble_S,
//           stage_activation_bytes_S (S = 0 .. pp - 1)}     one row per log
//   /eval/{step, tokens, flops, loss}                                     one row per eval
//   /checkpoints/{step, tokens, intermediate}                             one row per save
//   /spectra/{step, <hidden matrix name>...}   top singular values (trainer/spectra.h), one row
//                                              at the start and every eval.spectra_every_steps
//   attributes on /: format, version, arch, N, total_params, active_params, embedding_params,
//     flops_per_token, width, depth, n_heads, streams and P (ParScale's, 1 otherwise),
//     prefix_tokens, aggregation_smoothing, experts, top_k, granularity,
//     active_N (active non-embedding), shared_experts, expert_ffn, pattern ("" unless hybrid),
//     ssm_state, ssm_head_dim, ssm_chunk, ssm_expand, conv_kernel, attention_window, seq_len,
//     global_batch,
//     batch_tokens, lr, weight_decay, seed, parametrization, base_width, base_depth,
//     width_multiplier, depth_multiplier, depth_alpha, output_multiplier, attention_multiplier,
//     wd_rule, rules (optim::rules_table), total_steps, dp, zero, recipe
//
// step_s, compute_s and comm_s are seconds per step on rank 0, averaged over the steps since the
// previous row: comm_s is the time spent inside communication calls (what the backward pass did not
// hide), compute_s the rest of the step. comm_bytes is what rank 0 sent per step under the ring
// model of bus bandwidth (parallel/data_parallel.h).
//
// Every append opens the file, writes and closes it, so a reader (h5py) sees a complete file
// whenever the trainer is not in the middle of a write. On resume, rows past the resumed step are
// dropped: they belong to the part of the run that the checkpoint does not contain.
//
// A process killed in the middle of an append can leave the file damaged. So with every checkpoint
// the trace is copied to trace.h5.bak (through a temporary file and a rename): it holds every row
// up to that checkpoint, which is all a resume from it keeps. Reopening a trace that cannot be read
// restores it from that copy (the damaged file kept as trace.h5.damaged).
#pragma once

#include <cstdint>
#include <limits>
#include <map>
#include <string>
#include <variant>
#include <vector>

namespace ladder {

using TraceAttribute = std::variant<int64_t, double, std::string>;

inline constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

struct TrainRecord {
  int64_t step, tokens;
  double flops, loss, lr, grad_norm, tokens_per_s, mfu, elapsed_s;
  double step_s, compute_s, comm_s, comm_bytes;
  double tp_comm_s, tp_comm_bytes;  // tensor parallelism's, inside forward and backward
  // Pipeline parallelism's: activations and gradients sent per step by the busiest rank, and per
  // stage the bubble (the share of its schedule spent waiting for other stages) and the peak of
  // memory allocated above the step's starting level (activations in flight).
  double pp_p2p_bytes = 0;
  std::vector<double> stage_bubble, stage_activation_bytes;
  // Expert parallelism's all-to-alls per step, inside forward and backward.
  double ep_comm_s = 0, ep_comm_bytes = 0;
  // Mixture of experts (models/moe.h RoutingSummary over the interval's steps); NaN otherwise.
  double moe_aux_loss = kNaN, moe_z_loss = kNaN, moe_load_max_over_mean = kNaN, moe_load_cv = kNaN,
         moe_dropped_fraction = kNaN;
  // DiLoCo (parallel/diloco.h): bytes rank 0 sent to the other islands per training token (of all
  // islands), what data parallelism over the islands would have sent, and the seconds of an outer
  // step (NaN when the interval had none).
  double diloco_bytes_per_token = kNaN, diloco_dp_bytes_per_token = kNaN, diloco_outer_s = kNaN;
};

struct EvalRecord {
  int64_t step, tokens;
  double flops, loss;
};

class Trace {
 public:
  // Creates the trace, or (resume_step >= 0) reopens it and drops rows with step > resume_step.
  // Columns an older trace lacks are added, NaN for its existing rows.
  // `stages`: pipeline stages, one column of bubble and activation memory each.
  // `spectra`: the hidden matrices whose top singular values append_spectra() records.
  Trace(std::string path, const std::map<std::string, TraceAttribute>& attributes,
        int64_t resume_step, int stages = 1, std::vector<std::string> spectra = {});
  void append(const TrainRecord& r);
  void append(const EvalRecord& r);
  void append_checkpoint(int64_t step, int64_t tokens, bool intermediate);
  // Copies the trace to trace.h5.bak (above); after each checkpoint.
  void back_up() const;
  // One value per matrix named at construction, after `step` optimizer steps.
  void append_spectra(int64_t step, const std::vector<double>& top_singular_values);
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  int stages_;
  std::vector<std::string> spectra_;
};

}  // namespace ladder
