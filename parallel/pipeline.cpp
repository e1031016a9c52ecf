#include "parallel/pipeline.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <limits>
#include <map>
#include <optional>
#include <stdexcept>

#include "core/memory.h"

namespace ladder::parallel {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

PipelineAction forward(int chunk, int64_t microbatch) {
  return {PipelineAction::Forward, chunk, microbatch};
}
PipelineAction backward(int chunk, int64_t microbatch) {
  return {PipelineAction::Backward, chunk, microbatch};
}

// The k-th forward (or backward) unit of the interleaved schedule: micro-batches go in groups of
// `stages`; each group runs through chunk 0, then chunk 1, ... forward, and the chunks in reverse
// backward (Megatron-LM's get_model_chunk_id).
PipelineAction interleaved_unit(int64_t k, bool is_forward, int stages, int chunks) {
  const int64_t group = static_cast<int64_t>(stages) * chunks;
  int chunk = static_cast<int>((k % group) / stages);
  if (!is_forward) chunk = chunks - 1 - chunk;
  const int64_t microbatch = (k / group) * stages + k % stages;
  return is_forward ? forward(chunk, microbatch) : backward(chunk, microbatch);
}

// Warm-up forwards, then one forward and one backward in turn, then the cool-down backwards: the
// shape shared by 1F1B and the interleaved schedule, over `units` forward and backward units.
// paired: each forward and backward of the steady phase form one step (interleaving needs it to be
// free of deadlock; in 1F1B it would make neighbouring stages wait for each other's backward before
// a forward's activation leaves, and one pass per step is free of deadlock there).
PipelineSchedule one_forward_one_backward(
    int64_t units, int64_t warmup, bool paired,
    const std::function<PipelineAction(int64_t, bool)>& unit) {
  warmup = std::min(warmup, units);
  PipelineSchedule out;
  for (int64_t k = 0; k < warmup; ++k)
    out.push_back({unit(k, true)});
  for (int64_t k = 0; k < units - warmup; ++k) {
    if (paired) {
      out.push_back({unit(warmup + k, true), unit(k, false)});
    } else {
      out.push_back({unit(warmup + k, true)});
      out.push_back({unit(k, false)});
    }
  }
  for (int64_t k = units - warmup; k < units; ++k)
    out.push_back({unit(k, false)});
  return out;
}

}  // namespace

PipelineSchedule pipeline_schedule(ScheduleKind kind, int stages, int stage, int64_t microbatches,
                                   int chunks, bool forward_only) {
  if (stages < 1 || stage < 0 || stage >= stages || microbatches < 1 || chunks < 1)
    throw std::invalid_argument("pipeline_schedule: bad stages, stage, micro-batches or chunks");
  if (chunks > 1 && (kind != ScheduleKind::Interleaved || stages < 2))
    throw std::invalid_argument(
        "pipeline_schedule: several chunks per rank need interleaving over two stages or more");
  PipelineSchedule out;
  if (forward_only) {
    for (int64_t group = 0; group < microbatches; group += stages)
      for (int c = 0; c < chunks; ++c)
        for (int64_t m = group; m < std::min(microbatches, group + stages); ++m)
          out.push_back({forward(c, m)});
    return out;
  }
  switch (kind) {
    case ScheduleKind::GPipe:
      for (int64_t m = 0; m < microbatches; ++m)
        out.push_back({forward(0, m)});
      for (int64_t m = 0; m < microbatches; ++m)
        out.push_back({backward(0, m)});
      return out;
    case ScheduleKind::OneFOneB:
      // Stage s starts stages - s - 1 micro-batches ahead: the last stage runs its backward right
      // after each forward, and each earlier one has one more micro-batch on the way.
      return one_forward_one_backward(
          microbatches, stages - stage - 1, /*paired=*/false,
          [](int64_t k, bool f) { return f ? forward(0, k) : backward(0, k); });
    case ScheduleKind::Interleaved: {
      if (microbatches % stages != 0)
        throw std::invalid_argument(
            "pipeline_schedule: interleaving needs micro-batches divisible by the stages");
      // Megatron-LM's warm-up: enough forwards that the first backward's input has come back
      // around the ring of stages.
      const int64_t warmup =
          2 * static_cast<int64_t>(stages - stage - 1) + static_cast<int64_t>(chunks - 1) * stages;
      return one_forward_one_backward(
          microbatches * chunks, warmup, /*paired=*/true,
          [&](int64_t k, bool f) { return interleaved_unit(k, f, stages, chunks); });
    }
  }
  return out;
}

int64_t max_in_flight(const PipelineSchedule& schedule) {
  int64_t alive = 0, most = 0;
  for (const auto& step : schedule)
    for (const auto& a : step) {
      alive += a.kind == PipelineAction::Forward ? 1 : -1;
      most = std::max(most, alive);
    }
  return most;
}

std::vector<int64_t> partition_layers(const std::vector<double>& layer_cost, double first_cost,
                                      double last_cost, int64_t parts) {
  const int64_t layers = static_cast<int64_t>(layer_cost.size());
  if (parts < 1 || parts > layers)
    throw std::invalid_argument("partition_layers: need 1 <= parts <= layers");
  std::vector<double> prefix(layers + 1, 0.0);
  for (int64_t i = 0; i < layers; ++i)
    prefix[i + 1] = prefix[i] + layer_cost[i];
  const double inf = std::numeric_limits<double>::infinity();
  // best[j][i]: the least possible cost of the most expensive part when layers [0, i) form parts
  // 0..j-1; cut[j][i]: where the last of those parts starts.
  std::vector<std::vector<double>> best(parts + 1, std::vector<double>(layers + 1, inf));
  std::vector<std::vector<int64_t>> cut(parts + 1, std::vector<int64_t>(layers + 1, 0));
  best[0][0] = 0;
  for (int64_t j = 1; j <= parts; ++j)
    for (int64_t i = j; i <= layers; ++i)
      for (int64_t k = j - 1; k < i; ++k) {
        const double part = prefix[i] - prefix[k] + (j == 1 ? first_cost : 0.0) +
                            (j == parts && i == layers ? last_cost : 0.0);
        const double worst = std::max(best[j - 1][k], part);
        // Ties go to the later cut: earlier parts take the extra layer, the last (which carries
        // the readout) the fewer.
        if (worst <= best[j][i]) best[j][i] = worst, cut[j][i] = k;
      }
  std::vector<int64_t> counts(parts);
  for (int64_t j = parts, i = layers; j > 0; --j) {
    counts[j - 1] = i - cut[j][i];
    i = cut[j][i];
  }
  return counts;
}

Pipeline::Pipeline(const Communicator& pp, ScheduleKind kind, int chunks)
    : pp_(pp), kind_(kind), chunks_(chunks) {
  if (chunks < 1 || (chunks > 1 && kind != ScheduleKind::Interleaved))
    throw std::invalid_argument("Pipeline: several chunks per rank need the interleaved schedule");
}

PipelineStats Pipeline::run(const PipelineStep& step) const {
  return execute(step, /*forward_only=*/false);
}

PipelineStats Pipeline::run_forward(const PipelineStep& step) const {
  return execute(step, /*forward_only=*/true);
}

PipelineStats Pipeline::execute(const PipelineStep& step, bool forward_only) const {
  const auto start = Clock::now();
  const PipelineSchedule schedule =
      pipeline_schedule(kind_, stages(), stage(), step.microbatches, chunks_, forward_only);
  const int p = stages();
  const int last_virtual = p * chunks_ - 1;
  auto virtual_stage = [&](int chunk) { return chunk * p + stage(); };
  enum Tag { Activation = 0, Gradient = 1 };

  PipelineStats stats;
  const torch::Device device = step.activation_options.device();
  reset_peak_allocated_bytes(device);
  const int64_t base_bytes = allocated_bytes(device);

  // The receive a pass needs before it runs: the activation from the previous virtual stage
  // (forward) or the gradient from the next one (backward); none at the ends of the model.
  auto incoming = [&](const PipelineAction& a) -> std::optional<P2POp> {
    const int v = virtual_stage(a.chunk);
    const bool is_forward = a.kind == PipelineAction::Forward;
    if (is_forward ? v == 0 : v == last_virtual) return std::nullopt;
    const int peer = (is_forward ? v - 1 : v + 1) % p;
    return P2POp{P2POp::Recv,
                 torch::empty(step.activation_shape(a.microbatch), step.activation_options), peer,
                 is_forward ? Activation : Gradient};
  };
  // Posts the sends of the step just run and the receives of the next one as one batch, activations
  // before gradients, and waits for all; returns what each pass of the next step received.
  auto exchange = [&](std::vector<P2POp> sends, const std::vector<PipelineAction>& next) {
    std::vector<std::optional<P2POp>> receives;
    for (const auto& a : next)
      receives.push_back(incoming(a));
    std::vector<P2POp> ops;
    for (const bool send : {true, false})
      for (const int tag : {Activation, Gradient}) {
        for (const auto& op : sends)
          if (send && op.tag == tag) ops.push_back(op), stats.p2p_bytes += op.tensor.nbytes();
        for (const auto& op : receives)
          if (!send && op && op->tag == tag) ops.push_back(*op);
      }
    if (!ops.empty()) {
      const auto t = Clock::now();
      pp_.batch_isend_irecv(ops);
      stats.idle_seconds += seconds_since(t);
    }
    std::vector<torch::Tensor> received;
    for (const auto& op : receives)
      received.push_back(op ? op->tensor : torch::Tensor());
    return received;
  };

  // Activations alive between a micro-batch's forward and backward on a chunk: the received input
  // (whose gradient goes back) and the output (where the backward starts).
  std::map<std::pair<int, int64_t>, std::pair<torch::Tensor, torch::Tensor>> alive;
  std::pair<size_t, size_t> last_backward{schedule.size(), 0};
  for (size_t s = 0; s < schedule.size(); ++s)
    for (size_t j = 0; j < schedule[s].size(); ++j)
      if (schedule[s][j].kind == PipelineAction::Backward) last_backward = {s, j};

  std::vector<torch::Tensor> received = exchange({}, schedule.front());
  for (size_t s = 0; s < schedule.size(); ++s) {
    std::vector<P2POp> sends;
    for (size_t j = 0; j < schedule[s].size(); ++j) {
      const PipelineAction& a = schedule[s][j];
      const int v = virtual_stage(a.chunk);
      if (a.kind == PipelineAction::Forward) {
        torch::Tensor input = received[j];
        if (input.defined() && !forward_only) input.requires_grad_(true);
        torch::Tensor output = step.forward(a.chunk, a.microbatch, input);
        if (v != last_virtual) {
          if (output.sizes().vec() != step.activation_shape(a.microbatch) ||
              output.dtype() != step.activation_options.dtype())
            throw std::logic_error("pipeline: a stage's output is not the declared activation");
          sends.push_back(
              P2POp{P2POp::Send, output.detach().contiguous(), (v + 1) % p, Activation});
        }
        if (!forward_only) {
          alive[{a.chunk, a.microbatch}] = {input, output};
          stats.max_in_flight = std::max(stats.max_in_flight, static_cast<int64_t>(alive.size()));
        }
      } else {
        auto slot = alive.find({a.chunk, a.microbatch});
        if (slot == alive.end()) throw std::logic_error("pipeline: a backward before its forward");
        auto [input, output] = std::move(slot->second);
        alive.erase(slot);
        step.before_backward(std::make_pair(s, j) == last_backward);
        if (v == last_virtual)
          output.backward();
        else
          torch::autograd::backward({output}, {received[j]});
        if (v != 0) {
          torch::Tensor grad = input.grad();
          if (!grad.defined()) grad = torch::zeros_like(input);  // the input did not matter
          sends.push_back(P2POp{P2POp::Send, grad.contiguous(), (v - 1) % p, Gradient});
        }
      }
    }
    received = exchange(std::move(sends),
                        s + 1 < schedule.size() ? schedule[s + 1] : std::vector<PipelineAction>{});
  }
  stats.peak_activation_bytes = std::max<int64_t>(0, peak_allocated_bytes(device) - base_bytes);
  stats.seconds = seconds_since(start);
  return stats;
}

std::string describe_pipeline(const Pipeline& pipeline, int64_t microbatches,
                              const std::vector<int64_t>& layers_per_stage,
                              std::optional<StageBalance> balance) {
  std::string split;
  for (size_t v = 0; v < layers_per_stage.size(); ++v)
    split += fmt::format("{}{}", v ? " " : "", layers_per_stage[v]);
  const int chunks = pipeline.chunks();
  return fmt::format(
      "pipeline parallel: pp={}, schedule {}{}, {} micro-batches per step, layers per {}stage: "
      "{}{}",
      pipeline.stages(), choice_name(kScheduleKindNames, pipeline.kind()),
      chunks > 1 ? fmt::format(" ({} virtual stages per rank)", chunks) : std::string(),
      microbatches, chunks > 1 ? "virtual " : "", split,
      balance ? fmt::format(" (balanced by {})", choice_name(kStageBalanceNames, *balance))
              : std::string(" (parallel.stage_layers)"));
}

}  // namespace ladder::parallel
