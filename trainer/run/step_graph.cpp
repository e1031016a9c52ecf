#include "trainer/run/step_graph.h"

#include <ATen/cuda/CUDAEvent.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <optional>

#include "trainer/run/run_context.h"

namespace ladder {

struct StepGraph::State {
  explicit State(c10::DeviceIndex device) : stream(c10::cuda::getStreamFromPool(false, device)) {}
  c10::cuda::CUDAStream stream;  // capture needs a stream other than the default one
  at::cuda::CUDAGraph graph;
  bool captured = false;
  int64_t eager_steps = 0;
  torch::Tensor rows;  // the static batch the graph reads
  StepOnDevice out;    // the graph's outputs
  parallel::PipelineStats
      stats;  // the captured step's bytes and peaks (no times: replays are one launch)
};

StepGraph::StepGraph(RunContext& run)
    : run_(run), state_(std::make_unique<State>(run.device.index())) {}

StepGraph::~StepGraph() = default;

StepOnDevice StepGraph::run(int64_t step, double lr, parallel::PipelineStats& stats) {
  State& s = *state_;
  const c10::cuda::CUDAStream caller = c10::cuda::getCurrentCUDAStream(run_.device.index());
  // The graph's stream takes up after what the caller queued (an evaluation, a checkpoint load).
  at::cuda::CUDAEvent queued;
  queued.record(caller);
  queued.block(s.stream);
  {
    const c10::cuda::CUDAStreamGuard on_graph_stream(s.stream);
    const torch::Tensor rows = host_rows(run_, step);
    if (!s.rows.defined()) s.rows = torch::empty(rows.sizes(), rows.options().device(run_.device));
    s.rows.copy_(rows, /*non_blocking=*/true);  // the pinned buffer is kept until the copy ran
    run_.optimizer->begin_step(lr);
    if (s.eager_steps < kWarmupSteps) {
      ++s.eager_steps;
      s.out = step_on_device(run_, s.rows, stats);
    } else {
      if (!s.captured) {
        s.graph.capture_begin();
        s.out = step_on_device(run_, s.rows, s.stats);
        s.graph.capture_end();
        s.captured = true;
        s.stats.seconds = s.stats.idle_seconds = 0;  // what recording took, not a step's time
      }
      s.graph.replay();
      stats = s.stats;
    }
  }
  // The caller's stream waits on the device for the step (its reads of loss and norm, the next
  // evaluation's reads of the weights).
  at::cuda::CUDAEvent done;
  done.record(s.stream);
  done.block(caller);
  return s.out;
}

}  // namespace ladder
