// train.cuda_graph: the device part of the sync-free step (trainer/run/train_step.h,
// step_on_device: forward, backward, gradient norm, the guarded update, the loss) captured once as
// a CUDA graph and replayed every step after, so that a step costs one launch from the host
// instead of thousands. What changes between steps reaches the graph through fixed device tensors
// written outside it, in stream order: the batch (copied from pinned memory into a static buffer)
// and AdamW's step count and learning rate (AdamW::begin_step). The first steps run eagerly on the
// graph's stream (cuBLAS, the autograd engine and the allocator settle), then one step is captured
// and replayed.
//
// The recipe refuses the switch where the step needs the host or another rank (trainer/recipe/:
// MoE routing counts, DiLoCo, tensor, pipeline or data parallelism, whose NCCL waits poll from
// the host) and off the GPU.
#pragma once

#include <cstdint>
#include <memory>

#include "parallel/pipeline.h"
#include "trainer/run/train_step.h"

namespace ladder {

struct RunContext;

class StepGraph {
 public:
  explicit StepGraph(RunContext& run);
  ~StepGraph();
  // Step `step` at learning rate `lr`: eager during the warm-up, captured and replayed after. The
  // outputs are the graph's own tensors, valid until the next step; the stream the caller works on
  // waits for them on the device (no host wait).
  StepOnDevice run(int64_t step, double lr, parallel::PipelineStats& stats);

  static constexpr int64_t kWarmupSteps = 3;

 private:
  struct State;  // the graph, its stream and static buffers (step_graph.cpp: CUDA types)
  RunContext& run_;
  std::unique_ptr<State> state_;
};

}  // namespace ladder
