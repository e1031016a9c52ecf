// Expert parallelism (GShard, Lepikhin et al. 2020; Switch, Fedus et al. 2021): the experts of a
// mixture-of-experts layer are split over a group of ep ranks carved out of the data-parallel ranks
// (parallel/mesh.h), rank r holding experts [r E / ep, (r + 1) E / ep). Each rank routes its own
// tokens; the rows routed to an expert travel to the rank that holds it with one uneven all-to-all
// (dispatch), are computed there together with the rows of the other ranks, and travel back with a
// second all-to-all (combine). The backward pass of each is the other.
//
// Expert weights are reduced over the dp / ep ranks that hold the same experts (the mesh's
// expert_dp group); every other parameter over all of dp (trainer/run/train.cpp holds both
// reductions).
//
// Like tensor_parallel.h, this file knows nothing of models: it moves rows between ranks.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "parallel/communicator.h"

namespace ladder::parallel {

// The group the experts are split over.
struct ExpertParallel {
  const Communicator* group = nullptr;  // nullptr: every rank holds every expert
  CommStats* stats = nullptr;           // where the all-to-alls are counted, if anywhere
  int size() const { return group ? group->size() : 1; }
  int rank() const { return group ? group->rank() : 0; }
  bool active() const { return size() > 1; }
};

// Where this rank's routed rows go and what it computes. The rows are sorted by expert (global
// ids), `load` [experts] of them per expert; the ranks exchange their loads to agree on the plan.
struct ExpertDispatch {
  std::vector<int64_t> send, recv;  // rows to / from each ep rank
  torch::Tensor local_load;         // [local experts] int64: rows this rank computes per expert
  torch::Tensor to_expert_major;    // received rows (by source rank, then expert) -> by expert
  torch::Tensor from_expert_major;  // the inverse permutation
};

// Collective over ep.group (the loads' exchange). `load` is int64 on any device.
ExpertDispatch plan_dispatch(const torch::Tensor& load, int64_t experts, const ExpertParallel& ep);

// Rows [assignments, d] sorted by expert -> the rows this rank's experts compute, sorted by local
// expert (plan.local_load of each).
torch::Tensor dispatch_rows(const torch::Tensor& rows, const ExpertDispatch& plan,
                            const ExpertParallel& ep);
// The experts' outputs, sorted by local expert -> this rank's own rows back, in dispatch order.
torch::Tensor combine_rows(const torch::Tensor& rows, const ExpertDispatch& plan,
                           const ExpertParallel& ep);

// The start-up log line of expert parallelism: experts per rank and the ranks that reduce their
// gradients.
std::string describe_expert_parallel(const ExpertParallel& ep, int64_t experts, int expert_dp);
// The interval's log line: the all-to-alls' time and bytes per step.
std::string describe_expert_parallel_interval(int64_t step, double seconds_per_step,
                                              double bytes_per_step);

}  // namespace ladder::parallel
