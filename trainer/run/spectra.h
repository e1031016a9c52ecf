// The diagnostic of "Robust Layerwise Scaling Rules by Proper Weight Decay Tuning" (2025): the top
// singular value of every hidden matrix, recorded in the trace (/spectra) as training runs, so that
// runs at several widths can be compared (`ladder inspect` prints them against width). Under the
// width-aware weight-decay rule the paper finds them about width-invariant.
//
// Power iteration on the logical matrix, from a fixed start vector, in fp32, until the estimate
// changes by less than 1e-5 relative or after kMaxPowerIterations (its error then shrinks as
// (sigma_2 / sigma_1)^(2k): a top value close to the next converges slowly). A tensor-parallel rank
// holds a block of rows or columns, and the products the iteration needs are summed over the group
// (rows: W v is split, W^T u is a sum of partial products; columns the other way round).
#pragma once

#include <string>
#include <vector>

#include "models/params.h"
#include "parallel/communicator.h"

namespace ladder {

constexpr int kMaxPowerIterations = 100;

// The largest singular value of the logical matrix of which `param.value` is this rank's block
// (tp: the tensor-parallel group holding the other blocks; unused when the parameter is not split).
double top_singular_value(const models::Param& param, const parallel::Communicator* tp,
                          int max_iterations = kMaxPowerIterations);

// The hidden matrices of the whole model, by name (the trace's /spectra columns). Stacks of
// matrices (a mixture of experts' [experts, out, in]) are left out.
std::vector<std::string> spectra_names(const models::ParamStore& params);

// Every hidden matrix's top singular value, in spectra_names order, known on every rank of `world`:
// each is computed by the ranks holding it and contributed by one of them (`contributes`: this rank
// is the first of its tensor- and data-parallel groups).
std::vector<double> top_singular_values(const models::ParamStore& params,
                                        const parallel::Communicator& tp,
                                        const parallel::Communicator& world, bool contributes);

}  // namespace ladder
