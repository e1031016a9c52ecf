// One optimizer step of a run, top to bottom: this rank's micro-batches through the pipeline
// schedule (forward under autocast when bf16, backward) -> tied-embedding gradient sum between the
// pipeline's ends -> gradient reduction over dp -> the global gradient norm -> clip -> learning
// rate -> AdamW (on this rank's ZeRO shard, or everything) -> parameter all-gather (ZeRO) ->
// routed layers' balancing -> DiLoCo's outer step when due.
#pragma once

#include <cstdint>
#include <string>

#include "parallel/communicator.h"
#include "parallel/pipeline.h"
#include "trainer/run/run_context.h"

namespace ladder {

// What one step did, for the interval metrics (trainer/run/interval_metrics.h).
struct StepResult {
  // fp64 device scalars, read by the host only at log steps: the global batch's mean loss and the
  // global gradient norm before clipping (each the islands' mean with DiLoCo).
  torch::Tensor loss, grad_norm;
  double lr = 0;
  double seconds = 0;  // the step's wall time on this rank
  parallel::PipelineStats pipeline;
  parallel::CommStats dp_comm;      // the gradient reduction's (and the loss's) collectives
  parallel::CommStats tp_comm;      // the tensor-parallel layers', inside forward and backward
  parallel::CommStats ep_comm;      // the experts' all-to-alls
  parallel::CommStats island_comm;  // DiLoCo's exchanges and outer steps
  torch::Tensor routing;            // routed layers' counters of the step (models/moe.h), or none
  int64_t outer_updates = 0;        // DiLoCo outer updates (fragments) applied in this step
};

// The device part of a sync-free step, what a CUDA graph captures (trainer/run/step_graph.h):
// gradients zeroed, forward and backward over `rows` (this rank's, on the device), the tied
// embedding's and dp's gradient sums, the global norm, with train.sync_free_step the guarded update
// (after AdamW::begin_step), and the loss summed on the device. fp64 device scalars.
struct StepOnDevice {
  torch::Tensor loss;        // the global batch's mean loss (the islands' mean with DiLoCo)
  torch::Tensor norm;        // this island's gradient norm before clipping
  torch::Tensor shown_norm;  // what is logged and checked: the islands' mean with DiLoCo
};
StepOnDevice step_on_device(RunContext& run, const torch::Tensor& rows,
                            parallel::PipelineStats& stats);
// This rank's rows of step `step`, every micro-batch's (consecutive rows of the global batch), on
// the CPU: in pinned memory when the run is on a GPU.
torch::Tensor host_rows(RunContext& run, int64_t step);

// Trains step `step` (0-based: the step that `step` completed steps precede). A non-finite loss
// or gradient norm (the same on every rank) stops every rank alike with AgreedError, before the
// update; with train.sync_free_step the update is skipped on the device and the error comes when
// the loop next reads run.finite_watch.
StepResult train_step(RunContext& run, int64_t step);

// Stops every rank alike (AgreedError) when `value`, the same on every rank, is not finite, before
// anything of the state after step `step` (0-based) is written. `read_after`: the steps completed
// when the value was read, when later than its step (the sync-free step's deferred check).
void require_finite(double value, const std::string& what, int64_t step, int64_t read_after = -1);

// The mean loss over the first eval.tokens of `val` (the validation split or an eval set), in
// order (with DiLoCo, of the global model the islands agree on).
double evaluate(RunContext& run, const data::TokenDataset& val);

// The evaluation after `done` steps: the validation loss, with eval.average the loss of the
// averaged weights (trainer/run/weight_average.h), and each eval set's loss; logged, and returned
// as the trace's row.
EvalRecord evaluate_after(RunContext& run, int64_t done);

}  // namespace ladder
