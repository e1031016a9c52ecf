// DiLoCo: islands of ordinary training that synchronise rarely (Douillard et al. 2023, "DiLoCo:
// Distributed Low-Communication Training of Language Models"; Douillard et al. 2025, "Streaming
// DiLoCo with overlapping communication").
//
// Each island (a whole tp x pp x dp group of the mesh) trains its own replica with its inner
// optimizer on its own data. Every H inner steps the islands meet: the pseudo-gradient
//     delta = theta_global - theta_island
// is averaged over the islands (all-reduce on the mesh's `island` communicator, which joins the
// ranks with the same (dp, pp, tp) coordinate, so each rank exchanges exactly the tensors it
// holds), the outer optimizer, SGD with Nesterov momentum (Sutskever et al. 2013, in PyTorch's
// form),
//     m = mu m + delta;   theta_global -= lr (delta + mu m)
// updates the global parameters, and every island restarts from them.
//
// Streaming (fragments F > 1): the rank's parameters, concatenated in registration order, are cut
// into F contiguous pieces of about equal size; fragment f synchronises on the steps
// done = f H / F (mod H), so the exchanges are staggered and the peak bandwidth drops by F. With
// `overlap_steps` tau > 0 a fragment's exchange starts after its sync step and is only waited for
// tau inner steps later, while those steps compute; the island then takes
//     theta_island = alpha theta_island + (1 - alpha) theta_global
// (Streaming DiLoCo's mixing, alpha = `mixing`) so the tau steps of progress are not thrown away.
// Open MPI moves a non-blocking collective forward only inside MPI calls, so on CPU the exchange
// progresses during the inner steps' own data-parallel communication (and at the latest when it is
// waited for); NCCL runs it on its own stream.
//
// Compression: the pseudo-gradient may travel as fp32 (an all-reduce), or encoded as bf16, or as
// 8- or 4-bit integers with one fp32 scale per block of kQuantBlock values (absmax / qmax, rounded
// to nearest): then each island's encoding is all-gathered and every rank decodes and averages them
// in island order, so all islands compute the same global parameters bit for bit.
//
// At the last step every fragment is synchronised (pending exchanges are applied first), so the
// run ends on the global model. This file knows nothing about models or optimizers (DESIGN.md
// dependency direction): the trainer resets its inner optimizer when asked to.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/attributes.h"
#include "parallel/communicator.h"
#include "parallel/config.h"

namespace ladder::parallel {

// Values per fp32 scale in the 8- and 4-bit encodings.
inline constexpr int64_t kQuantBlock = 128;

// Bytes of the encoding of n values (Fp32 included: 4 n).
int64_t encoded_bytes(PseudoGradDtype dtype, int64_t n);
// Encodes the flat fp32 `values` into `out` (uint8, encoded_bytes long).
void encode_pseudo_grad(const torch::Tensor& values, PseudoGradDtype dtype, torch::Tensor out);
// The n fp32 values an encoding stands for.
torch::Tensor decode_pseudo_grad(const torch::Tensor& bytes, PseudoGradDtype dtype, int64_t n);

struct DilocoOptions {
  int64_t inner_steps = 100;  // H
  double outer_lr = 0.7;
  double outer_momentum = 0.9;  // Nesterov
  int64_t fragments = 1;        // F
  int64_t overlap_steps = 0;    // tau
  double mixing = 0.5;          // alpha, with tau > 0
  PseudoGradDtype dtype = PseudoGradDtype::Fp32;
};

class DiLoCo {
 public:
  // `params`: this rank's fp32 parameter tensors (contiguous), in the same order and shapes on the
  // ranks of the `islands` group. The global parameters start as their current values.
  DiLoCo(std::vector<torch::Tensor> params, const Communicator& islands, DilocoOptions options,
         int64_t total_steps);
  ~DiLoCo();
  DiLoCo(const DiLoCo&) = delete;
  DiLoCo& operator=(const DiLoCo&) = delete;

  // After inner step `done` (1-based): starts the exchanges whose sync step this is and applies
  // those due now (outer update, the island restarts or mixes). At done == total_steps every
  // fragment ends synchronised. Returns whether an outer update was applied.
  bool after_inner_step(int64_t done);

  // The step after which fragment f's exchanges start: the done > 0 with (done - shift) % H == 0.
  int64_t shift(int64_t fragment) const;
  int64_t fragments() const { return static_cast<int64_t>(fragment_begin_.size()) - 1; }
  int64_t outer_updates() const { return outer_updates_; }

  // Exchanges swapped with the island's parameters: calling it twice restores them. The trainer
  // evaluates the global model this way.
  void swap_global();

  // State for checkpoints, as views of tensor k's elements: the global parameters, the outer
  // momentum, and the averaged pseudo-gradients received but not yet applied.
  torch::Tensor global(size_t k) const;
  torch::Tensor momentum(size_t k) const;
  torch::Tensor pending(size_t k) const;
  // Which fragments have a pending pseudo-gradient and the step it is applied after, as text
  // ("f:step f:step"); waits for exchanges in flight first. set_pending_state restores it (after
  // pending() was filled).
  std::string pending_state();
  void set_pending_state(const std::string& text);

  // Sums `values` (fp64) over the islands, counted in the island traffic: the trainer agrees on the
  // loss and gradient norm every step, so that every rank stops alike.
  void agree(torch::Tensor& values);

  // Island traffic and time spent in outer steps since the last call.
  CommStats take_stats();
  // What one inner step would send per rank if the islands were one more data-parallel axis: an
  // all-reduce of every fp32 gradient over them (ring model); 0 with one island.
  double data_parallel_bytes_per_step() const;

 private:
  struct Exchange;
  void start(int64_t fragment, int64_t apply_after);
  void finish(Exchange& e);  // waits, decodes into pending_
  void apply(int64_t fragment, bool mix);
  torch::Tensor gather(int64_t begin, int64_t end) const;  // the island's values, flat
  void scatter(int64_t begin, int64_t end, const torch::Tensor& values);

  std::vector<torch::Tensor> params_;
  std::vector<int64_t> offset_;          // tensor k's first element in the flat buffers
  std::vector<int64_t> fragment_begin_;  // F + 1 boundaries
  const Communicator& islands_;
  DilocoOptions options_;
  int64_t total_steps_;
  torch::Tensor global_, momentum_, pending_;  // flat fp32
  std::vector<Exchange> exchanges_;            // started, not yet applied
  std::vector<int64_t> clean_at_;  // per fragment: the step the island last took the global values
  int64_t outer_updates_ = 0;
  CommStats stats_;
};

// The start-up log line of DiLoCo: islands, their ranks and rows, the outer optimizer, the
// inner state, streaming fragments and overlap.
std::string describe_diloco(const DilocoOptions& o, int64_t islands, int ranks_per_island,
                            int64_t rows_per_step, bool reset_inner_state);
// The interval's log line: outer updates since the last line, bytes across islands per token
// (against data parallelism over the islands), an outer step's seconds (NaN: none in the interval).
std::string describe_diloco_interval(int64_t step, int64_t outer_updates, bool streaming,
                                     double bytes_per_token, double dp_bytes_per_token,
                                     double outer_seconds);
// Its trace attributes (diloco_*), given whether it runs: the options are recorded either way.
Attributes diloco_attributes(const DilocoOptions& o, int64_t islands, bool active,
                             bool reset_inner_state);

}  // namespace ladder::parallel
