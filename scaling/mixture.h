// `ladder fit --law mixture`: the data-mixing law of Ye et al. 2024 ("Data Mixing Laws: Optimizing
// Data Mixtures by Predicting Language Modeling Performance", eq. 1): the loss on validation set
// (domain) i after training on mixture weights r = (r_1 .. r_M), sum r_j = 1, is
//
//     L_i(r) = c_i + k_i exp(sum_j t_ij r_j).
//
// With sum r_j = 1 a constant added to every t_ij is the same law (k_i absorbs it), so the last
// source is the reference, t_iM = 0, and t_ij is source j's effect relative to it. Fitted per set
// as log L = LSE(log c, log k + sum_{j<M} t_j r_j) by fit_law (Huber on log-loss residuals, L-BFGS
// from a grid, bootstrap over runs), from each run's last evaluation: the runs' mixtures come from
// their traces (data_mixture), the losses from their eval sets (eval.sets; --eval SET fits one).
// Then the mixture minimising a target (one set's predicted loss, or the mean over the fitted sets)
// is found on the simplex, with the spread of that optimum over the bootstrap fits, and held-out
// runs (--holdout K: the last K runs of the inputs) are predicted against their measured losses.
#pragma once

#include <string>
#include <vector>

#include "scaling/laws.h"

namespace ladder::scaling {

// The law over `sources` (M of them; M - 1 slopes), for fit_law; Features::mixture holds r.
Law mixture_law(const std::vector<std::string>& sources);

// Predicted loss of a fitted law (its variables `theta`) at weights r.
double mixture_loss(const std::vector<double>& theta, const std::vector<double>& r);

// The weights on the simplex minimising the mean of `laws` (one theta per set, equal weight):
// an exhaustive lattice of step 1/200 for up to 3 sources, else 20,000 seeded points, then a
// finer lattice around the best (step 1/1000).
std::vector<double> best_mixture(const std::vector<std::vector<double>>& laws, size_t sources);

// Parses a trace's data_mixture attribute ("NAME=WEIGHT ..."); ladder::Error naming `where`.
std::vector<std::pair<std::string, double>> parse_mixture(const std::string& text,
                                                          const std::string& where);

}  // namespace ladder::scaling
