// The pipeline schedules as lists of passes, without running them: every pass once and in a valid
// order, the activations each keeps in flight, and a simulation of their point-to-point
// communication under the executor's rule (after each pass, one batch: the send of what it
// produced and the receive of what the next pass needs; a batch completes when each of its
// operations meets its partner in the peer's current batch). The simulation finds deadlocks and
// messages that would meet the wrong partner, for every schedule over a range of shapes.
#include <gtest/gtest.h>

#include <map>
#include <optional>
#include <set>
#include <string>
#include <tuple>

#include "parallel/pipeline.h"

namespace ladder::parallel {
namespace {

using Kind = ScheduleKind;

// One message: what it carries (activation or gradient, the virtual stage that produced it, the
// micro-batch) and between whom.
struct Message {
  bool gradient;
  int producer;  // virtual stage
  int64_t microbatch;
  bool operator==(const Message& o) const {
    return gradient == o.gradient && producer == o.producer && microbatch == o.microbatch;
  }
};

struct Op {
  bool send;
  int peer;
  Message message;
  bool done = false;
};

// The executor's batches for one rank (Pipeline::execute): before the first step the receives it
// needs; after each step the sends of what it produced and the receives of what the next needs,
// activations before gradients.
std::vector<std::vector<Op>> batches_of(const PipelineSchedule& schedule, int stages, int stage,
                                        int chunks) {
  const int last = stages * chunks - 1;
  auto vs = [&](int chunk) { return chunk * stages + stage; };
  auto incoming = [&](const PipelineAction& a) -> std::optional<Op> {
    const int v = vs(a.chunk);
    if (a.kind == PipelineAction::Forward)
      return v == 0 ? std::nullopt
                    : std::optional<Op>(Op{false, (v - 1) % stages, {false, v - 1, a.microbatch}});
    return v == last ? std::nullopt
                     : std::optional<Op>(Op{false, (v + 1) % stages, {true, v + 1, a.microbatch}});
  };
  auto outgoing = [&](const PipelineAction& a) -> std::optional<Op> {
    const int v = vs(a.chunk);
    if (a.kind == PipelineAction::Forward)
      return v == last ? std::nullopt
                       : std::optional<Op>(Op{true, (v + 1) % stages, {false, v, a.microbatch}});
    return v == 0 ? std::nullopt
                  : std::optional<Op>(Op{true, (v - 1) % stages, {true, v, a.microbatch}});
  };
  std::vector<std::vector<Op>> out;
  auto add = [&](const std::vector<PipelineAction>* done, const std::vector<PipelineAction>* next) {
    std::vector<Op> batch;
    for (const bool send : {true, false})
      for (const bool gradient : {false, true}) {
        const auto* passes = send ? done : next;
        if (!passes) continue;
        for (const auto& a : *passes) {
          auto op = send ? outgoing(a) : incoming(a);
          if (op && op->message.gradient == gradient) batch.push_back(*op);
        }
      }
    if (!batch.empty()) out.push_back(batch);
  };
  add(nullptr, &schedule.front());
  for (size_t i = 0; i < schedule.size(); ++i)
    add(&schedule[i], i + 1 < schedule.size() ? &schedule[i + 1] : nullptr);
  return out;
}

// Runs every rank's batches to the end; returns "" or what went wrong.
std::string simulate(Kind kind, int stages, int64_t microbatches, int chunks, bool forward_only) {
  std::vector<std::vector<std::vector<Op>>> batches;
  for (int s = 0; s < stages; ++s)
    batches.push_back(batches_of(
        pipeline_schedule(kind, stages, s, microbatches, chunks, forward_only), stages, s, chunks));
  std::vector<size_t> at(stages, 0);
  for (bool progress = true; progress;) {
    progress = false;
    for (int r = 0; r < stages; ++r) {
      if (at[r] == batches[r].size()) continue;
      for (Op& op : batches[r][at[r]]) {
        if (op.done || at[op.peer] == batches[op.peer].size()) continue;
        for (Op& other : batches[op.peer][at[op.peer]]) {
          if (other.done || other.peer != r || other.send == op.send) continue;
          if (!(other.message == op.message))
            return "rank " + std::to_string(r) + " and " + std::to_string(op.peer) +
                   " would match different messages";
          op.done = other.done = progress = true;
          break;  // in order: only the first waiting partner can match
        }
      }
    }
    for (int r = 0; r < stages; ++r)
      if (at[r] < batches[r].size() &&
          std::all_of(batches[r][at[r]].begin(), batches[r][at[r]].end(),
                      [](const Op& o) { return o.done; }))
        ++at[r], progress = true;
  }
  for (int r = 0; r < stages; ++r)
    if (at[r] != batches[r].size())
      return "deadlock: rank " + std::to_string(r) + " stuck at batch " + std::to_string(at[r]);
  return "";
}

// Every (chunk, micro-batch) forward once and, unless forward only, its backward once, later.
void expect_complete(const PipelineSchedule& schedule, int64_t microbatches, int chunks,
                     bool forward_only, const std::string& what) {
  std::set<std::tuple<int, int, int64_t>> seen;
  std::vector<PipelineAction> actions;
  for (const auto& step : schedule)
    actions.insert(actions.end(), step.begin(), step.end());
  for (const auto& a : actions) {
    EXPECT_TRUE(seen.insert({a.kind, a.chunk, a.microbatch}).second) << what << ": repeated pass";
    if (a.kind == PipelineAction::Backward) {
      EXPECT_TRUE(seen.count({PipelineAction::Forward, a.chunk, a.microbatch}))
          << what << ": backward before forward";
    }
  }
  EXPECT_EQ(seen.size(), static_cast<size_t>(microbatches * chunks * (forward_only ? 1 : 2)))
      << what;
}

TEST(PipelineSchedule, EverySchedulePassesAndCommunicatesWithoutDeadlock) {
  int cases = 0;
  for (int stages = 1; stages <= 8; ++stages)
    for (int64_t m = 1; m <= 16; ++m)
      for (const Kind kind : {Kind::GPipe, Kind::OneFOneB, Kind::Interleaved})
        for (int chunks = 1; chunks <= 4; ++chunks) {
          if ((kind == Kind::Interleaved) != (chunks > 1) || (chunks > 1 && stages == 1)) continue;
          for (const bool forward_only : {false, true}) {
            if (kind == Kind::Interleaved && !forward_only && m % stages != 0) continue;
            const std::string what = "stages " + std::to_string(stages) + " m " +
                                     std::to_string(m) + " chunks " + std::to_string(chunks) +
                                     " kind " + std::to_string(static_cast<int>(kind)) +
                                     (forward_only ? " forward only" : "");
            for (int s = 0; s < stages; ++s)
              expect_complete(pipeline_schedule(kind, stages, s, m, chunks, forward_only), m,
                              chunks, forward_only, what);
            EXPECT_EQ(simulate(kind, stages, m, chunks, forward_only), "") << what;
            ++cases;
          }
        }
  EXPECT_GT(cases, 900);
}

TEST(PipelineSchedule, OneFOneBKeepsAtMostStagesInFlightAndGPipeKeepsAll) {
  for (int stages = 1; stages <= 8; ++stages)
    for (int64_t m = stages; m <= 16; ++m)
      for (int s = 0; s < stages; ++s) {
        EXPECT_EQ(max_in_flight(pipeline_schedule(Kind::OneFOneB, stages, s, m, 1)), stages - s);
        EXPECT_EQ(max_in_flight(pipeline_schedule(Kind::GPipe, stages, s, m, 1)), m);
      }
}

TEST(PipelineSchedule, OneFOneBAlternatesAfterTheWarmUp) {
  using A = PipelineAction;
  // Stage 0 of 3 with 4 micro-batches: two warm-up forwards, then F B F B, then two backwards.
  const PipelineSchedule want{{{A::Forward, 0, 0}},  {{A::Forward, 0, 1}}, {{A::Forward, 0, 2}},
                              {{A::Backward, 0, 0}}, {{A::Forward, 0, 3}}, {{A::Backward, 0, 1}},
                              {{A::Backward, 0, 2}}, {{A::Backward, 0, 3}}};
  EXPECT_EQ(pipeline_schedule(Kind::OneFOneB, 3, 0, 4, 1), want);
}

TEST(PipelineSchedule, InterleavedVisitsChunksInGroupsOfStages) {
  using A = PipelineAction;
  // The last of 2 stages with 2 chunks and 4 micro-batches: warm-up (v - 1) p = 2 forwards of
  // chunk 0, then 1F1B over units whose chunks go 0, 0, 1, 1 forward and 1, 1, 0, 0 backward.
  std::vector<A> s;
  for (const auto& step : pipeline_schedule(Kind::Interleaved, 2, 1, 4, 2))
    s.insert(s.end(), step.begin(), step.end());
  ASSERT_EQ(s.size(), 16u);
  EXPECT_EQ(s[0], (A{A::Forward, 0, 0}));
  EXPECT_EQ(s[1], (A{A::Forward, 0, 1}));
  EXPECT_EQ(s[2], (A{A::Forward, 1, 0}));
  EXPECT_EQ(s[3], (A{A::Backward, 1, 0}));
  EXPECT_EQ(s[4], (A{A::Forward, 1, 1}));
  EXPECT_EQ(s[5], (A{A::Backward, 1, 1}));
  EXPECT_EQ(s[6], (A{A::Forward, 0, 2}));
  EXPECT_EQ(s[7], (A{A::Backward, 0, 0}));
  // Backwards of each chunk run in ascending micro-batch order (gradients accumulate as in one
  // process).
  for (int chunk = 0; chunk < 2; ++chunk) {
    int64_t previous = -1;
    for (const auto& a : s)
      if (a.kind == A::Backward && a.chunk == chunk) {
        EXPECT_GT(a.microbatch, previous);
        previous = a.microbatch;
      }
  }
}

TEST(PipelineSchedule, RefusesShapesItCannotRun) {
  EXPECT_THROW(pipeline_schedule(Kind::Interleaved, 4, 0, 6, 2), std::invalid_argument);
  EXPECT_THROW(pipeline_schedule(Kind::OneFOneB, 2, 0, 4, 2), std::invalid_argument);
  EXPECT_THROW(pipeline_schedule(Kind::GPipe, 2, 2, 4, 1), std::invalid_argument);
  EXPECT_THROW(pipeline_schedule(Kind::Interleaved, 1, 0, 4, 2), std::invalid_argument);
  EXPECT_THROW(choice_value(kScheduleKindNames, "zero-bubble"), std::invalid_argument);
}

TEST(PartitionLayers, BalancesCostsWithTheEndsIncluded) {
  EXPECT_EQ(partition_layers(std::vector<double>(8, 1.0), 0, 0, 4),
            (std::vector<int64_t>{2, 2, 2, 2}));
  // Ties: the earlier stages take the extra layer.
  EXPECT_EQ(partition_layers(std::vector<double>(8, 1.0), 0, 0, 3),
            (std::vector<int64_t>{3, 3, 2}));
  // A readout worth 1.5 layers on the last stage: 5 + 3 (max 5 against 4 + 5.5 for 4 + 4).
  EXPECT_EQ(partition_layers(std::vector<double>(8, 1.0), 0, 1.5, 2), (std::vector<int64_t>{5, 3}));
  // Uneven layers (a hybrid pattern): the costly ones spread out.
  EXPECT_EQ(partition_layers({1, 1, 1, 4, 1, 1, 1, 4}, 0, 0, 2), (std::vector<int64_t>{4, 4}));
  EXPECT_EQ(partition_layers(std::vector<double>(3, 1.0), 0, 0, 3),
            (std::vector<int64_t>{1, 1, 1}));
  EXPECT_THROW(partition_layers(std::vector<double>(3, 1.0), 0, 0, 4), std::invalid_argument);
}

}  // namespace
}  // namespace ladder::parallel
