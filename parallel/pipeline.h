// Pipeline parallelism over the mesh's pp axis: the layer stack is cut into stages, one per pp rank
// (or, interleaved, `chunks` virtual stages per rank: rank r holds virtual stages r, r + pp,
// r + 2 pp, ...), and a step's micro-batches flow through them: activations forward, their
// gradients backward, with the communicator's point-to-point operations.
//
// Three schedules, each a list of forward and backward passes per rank (pipeline_schedule):
//   gpipe        every forward, then every backward (Huang et al. 2019, "GPipe"): activations of
//   all
//                m micro-batches are alive at once.
//   1f1b         PipeDream-Flush (Narayanan et al. 2021, "Efficient Large-Scale Language Model
//                Training on GPU Clusters Using Megatron-LM", section 2.2.1): pp - stage - 1
//                warm-up forwards, then one forward and one backward in turn, then the remaining
//                backwards. At most pp micro-batches are in flight on a stage; the bubble is the
//                same as GPipe's, (pp - 1) / (m + pp - 1) of the step.
//   interleaved  1F1B over v virtual stages per rank (the same paper, section 2.2.2), in groups of
//                pp micro-batches: the bubble shrinks by v at the price of v times the messages.
//                Needs m to be a multiple of pp.
// Every schedule runs each micro-batch's backward passes in ascending micro-batch order, so the
// gradients accumulate in the order of one process running them one after another.
//
// A schedule is a list of steps: one pass each, except in the steady phase of 1F1B and
// interleaving, where a step is a forward and a backward. Between two steps a rank posts one batch:
// the sends of what the step produced and the receives of what the next step needs, and waits for
// all of it (Megatron-LM's send_forward_backward_recv_forward_backward). Within a batch,
// activations go before gradients, in sends and receives alike, so messages between two ranks meet
// in order even where the backend matches by order alone (NCCL). Batching the steady phase's pair
// is what keeps the interleaved schedule free of deadlock when sends block until received (one pass
// per batch deadlocks as soon as m > pp); the tests simulate every schedule under these rules.
//
// This file knows nothing about models: the caller's `forward` computes one chunk on one
// micro-batch (tokens in on the first virtual stage, the loss out on the last).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "parallel/communicator.h"
#include "parallel/config.h"

namespace ladder::parallel {

struct PipelineAction {
  enum Kind { Forward, Backward } kind;
  int chunk;           // which of the rank's model chunks (virtual stage chunk * stages + stage)
  int64_t microbatch;  // which micro-batch of the step
  bool operator==(const PipelineAction& o) const {
    return kind == o.kind && chunk == o.chunk && microbatch == o.microbatch;
  }
};

// Steps of one or two passes; communication happens between steps.
using PipelineSchedule = std::vector<std::vector<PipelineAction>>;

// The steps rank `stage` of `stages` runs, in order, for one training step of `microbatches`
// micro-batches over `chunks` model chunks per rank (1 unless interleaved). forward_only: the
// forwards of an evaluation (any count of micro-batches, in groups of `stages` that each pass
// through chunk 0, then chunk 1, ...).
PipelineSchedule pipeline_schedule(ScheduleKind kind, int stages, int stage, int64_t microbatches,
                                   int chunks, bool forward_only = false);

// The most micro-batches whose activations a schedule keeps at once (forwards done, backwards not
// yet), over all of the rank's chunks.
int64_t max_in_flight(const PipelineSchedule& schedule);

// Cuts layers with costs `layer_cost` into `parts` contiguous runs of at least one layer each,
// minimising the most expensive part, where the first part also pays `first_cost` (the embedding)
// and the last `last_cost` (final norm, readout and loss). Returns the layer count of each part.
// Needs parts <= layer_cost.size().
std::vector<int64_t> partition_layers(const std::vector<double>& layer_cost, double first_cost,
                                      double last_cost, int64_t parts);

// Measured over one run of a schedule on this rank.
struct PipelineStats {
  double seconds = 0;       // the whole schedule, compute and communication
  double idle_seconds = 0;  // waiting for the other stages (inside the point-to-point calls)
  int64_t p2p_bytes = 0;    // activations and gradients this rank sent
  int64_t max_in_flight = 0;
  int64_t peak_activation_bytes = 0;  // memory allocated above the level at the schedule's start
  double bubble() const { return seconds > 0 ? idle_seconds / seconds : 0; }
};

// One step's work, supplied by the trainer.
struct PipelineStep {
  int64_t microbatches = 1;
  // Forward of `chunk` on `microbatch`. `input` is the activation received from the previous
  // virtual stage (undefined on the first, which reads its tokens itself); on the last virtual
  // stage the return value is the scalar to differentiate, elsewhere the activation for the next
  // one.
  std::function<torch::Tensor(int chunk, int64_t microbatch, const torch::Tensor& input)> forward;
  // Called before every backward pass; `last`: this rank's final backward pass of the step.
  std::function<void(bool last)> before_backward = [](bool) {};
  // The activation passed between stages for a micro-batch: shape and dtype/device (the receiver
  // allocates its buffer from these; gradients have the same).
  std::function<std::vector<int64_t>(int64_t microbatch)> activation_shape;
  torch::TensorOptions activation_options;
};

class Pipeline {
 public:
  // `pp`: the ranks that share this rank's data-parallel and tensor-parallel coordinates, ordered
  // by stage. chunks > 1 needs the interleaved schedule.
  Pipeline(const Communicator& pp, ScheduleKind kind, int chunks);

  int stages() const { return pp_.size(); }
  int stage() const { return pp_.rank(); }
  int chunks() const { return chunks_; }
  ScheduleKind kind() const { return kind_; }
  // Whether this rank's `chunk` is the model's first or last virtual stage.
  bool first(int chunk) const { return chunk == 0 && stage() == 0; }
  bool last(int chunk) const { return chunk == chunks_ - 1 && stage() == stages() - 1; }

  // Runs the step's forward and backward passes (gradients accumulate into the parameters' .grad).
  PipelineStats run(const PipelineStep& step) const;
  // Runs the forward passes only (evaluation, under the caller's NoGradGuard).
  PipelineStats run_forward(const PipelineStep& step) const;

 private:
  PipelineStats execute(const PipelineStep& step, bool forward_only) const;

  const Communicator& pp_;
  ScheduleKind kind_;
  int chunks_;
};

// The start-up log line of pipeline parallelism: stages, schedule, micro-batches and the layers of
// every (virtual) stage; `balance`: what balanced them (none when given explicitly).
std::string describe_pipeline(const Pipeline& pipeline, int64_t microbatches,
                              const std::vector<int64_t>& layers_per_stage,
                              std::optional<StageBalance> balance);

}  // namespace ladder::parallel
