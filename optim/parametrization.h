// From parameter roles to initial values and per-parameter optimiser settings (DESIGN.md contract
// 1).
//
// Standard parametrization (SP), the one built so far:
//   init   embedding N(0, 1); hidden and readout N(0, 1/fan_in) ("fan-in" init, He et al. 2015
//   without
//          the ReLU gain); vectors 1 (norm gains) or 0; each times the parameter's init_multiplier
//          (1/sqrt(2L) on residual output projections, 1/sqrt(d) on a tied embedding)
//   lr     the schedule's learning rate for every parameter
//   wd     optim.weight_decay on matrices (embedding, hidden, readout), none on vectors
// muP (mup.parametrization = "mup") is validated but not built yet: training refuses it at start.
//
// Initialisation is layout-independent (contract 3): each parameter is drawn at its full logical
// shape from a generator seeded by hash(run.seed, parameter name), so it never depends on which
// other parameters exist, their order, or how the tensor is later sharded.
#pragma once

#include <cstdint>
#include <vector>

#include "models/params.h"
#include "optim/config.h"

namespace ladder::optim {

// Per-parameter settings, in ParamStore order.
struct ParamSettings {
  double lr_multiplier = 1.0;
  double weight_decay = 0.0;
};

// Throws ladder::Error when the parametrization is not built.
void check_parametrization(const MupConfig& mup);

// Draws every parameter's initial value.
void initialize(models::ParamStore& store, const MupConfig& mup, uint64_t seed);

std::vector<ParamSettings> param_settings(const models::ParamStore& store, const OptimConfig& optim,
                                          const MupConfig& mup);

}  // namespace ladder::optim
