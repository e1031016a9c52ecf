// The metrics of the steps between two log lines. IntervalMetrics owns every counter of the
// interval (time, tokens, each parallelism's communication, the pipeline's bubble and memory,
// routing, DiLoCo's exchanges and outer steps): add() takes each step's StepResult, flush() turns
// the interval into its log lines and its trace row and starts the next. The lines of routing,
// expert parallelism and DiLoCo are written by those parts (models::describe_routing,
// parallel::describe_expert_parallel_interval, parallel::describe_diloco_interval).
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "trainer/run/run_context.h"
#include "trainer/run/trace.h"
#include "trainer/run/train_step.h"

namespace ladder {

class IntervalMetrics {
 public:
  // `peak_gflops`: the job's matmul peak that MFU is stated against (every rank's, summed).
  IntervalMetrics(const RunContext& run, double peak_gflops, int64_t start_step);

  void add(const StepResult& step);
  // Seconds the host waited for the interval's steps to finish on the device (the sync-free
  // step's finite check, trainer/run/finite_watch.h): training time of the interval.
  void add_wait(double seconds) { busy_ += seconds; }
  // After `done` steps: the interval's row and its log lines (the step line, then the lines of
  // routing, expert parallelism and DiLoCo when they are on). Every rank calls it (the pipeline
  // stages' figures are gathered).
  TrainRecord flush(int64_t done, std::vector<std::string>& lines);

 private:
  using Clock = std::chrono::steady_clock;
  void reset();

  const RunContext& run_;
  double peak_gflops_;
  int64_t start_step_;
  Clock::time_point loop_start_;
  double busy_ = 0;  // seconds of training (not eval or checkpoint) in the interval
  int64_t tokens_ = 0, steps_ = 0;
  torch::Tensor loss_, grad_norm_;  // the interval's last step's, on the device
  double lr_ = 0;
  parallel::CommStats dp_, tp_, ep_, island_;
  parallel::PipelineStats pipeline_;  // summed, and the peak's maximum
  torch::Tensor routing_;             // routed layers' counters summed over the interval
  int64_t outer_updates_ = 0;
};

}  // namespace ladder
