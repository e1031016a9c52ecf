// `ladder fit --law hyperparameters`: the optimal learning rate and batch size as power laws of the
// model size N and the training tokens D (or the compute C), from sweeps that vary them at several
// (N, D) — the form of DeepSeek LLM (2024, §3.1: η_opt = 0.3118 C^−0.125, B_opt = 0.292 C^0.3271)
// and StepLaw (Li et al. 2025: η_opt ∝ N^−0.713 D^0.307, B_opt ∝ D^0.571).
//
// Per cell (the runs of one N and one D, within 2%), per hyperparameter h: the runs of the slice
// through the cell's best run (the other hyperparameters at the best run's values), and a parabola
// of loss in ln h fitted to the best value and up to two neighbours on each side — the local fit
// the transfer fits use (scaling/fit.h). A cell whose best value is at an end of its grid, or with
// fewer than three values, is left out with a warning naming its runs. Then ln h* = ln a +
// α ln N + β ln D by least squares over the cells (a variable that does not vary across the cells
// is left out; `in_compute`: ln h* = ln a + γ ln C instead). Power Lines (Bergsma et al. 2025): at
// each learning-rate optimum the AdamW timescale τ = B / (η λ D) (B and D in tokens), and its
// dependence on tokens per parameter, ln τ = ln t + ρ ln(D / N).
#pragma once

#include <array>
#include <string>
#include <vector>

#include "scaling/points.h"

namespace ladder::scaling {

// A point's value of hyperparameter "lr", "batch" (tokens per step: the trace's batch_tokens, or a
// CSV's batch column) or "weight_decay"; NaN when it has none.
double hyperparameter_value(const Point& p, const std::string& hyperparameter);

struct HyperparameterCell {
  double N = 0, D = 0;
  std::vector<std::string> runs;    // the slice's runs, in order of value
  std::vector<double> value, loss;  // the slice
  double c0 = 0, c1 = 0, c2 = 0;    // loss = c0 + c1 x + c2 x^2, x = ln value
  double optimum = 0, loss_at_optimum = 0;
  double batch = 0, lr = 0, weight_decay = 0;  // the best run's
  // Every run of the cell as (lr, batch, loss): the loss surface the slice cuts through.
  std::vector<std::array<double, 3>> surface;
  double timescale() const;  // B / (lr_opt λ D) for a learning-rate cell; NaN without λ
};

struct HyperparameterLaw {
  std::string hyperparameter;
  bool in_compute = false;
  double log_coefficient = 0;
  std::vector<std::pair<std::string, double>> exponents;  // "N", "D" or "C"
  double predict(double N, double D) const;
};

// The cells with an optimum inside their grid; warnings name the cells left out. Points: the last
// of each run.
std::vector<HyperparameterCell> optimum_cells(const std::vector<Point>& points,
                                              const std::string& hyperparameter,
                                              std::vector<std::string>& warnings);

// The power law of the cells' optima; ladder::Error with fewer cells than its parameters + 1.
HyperparameterLaw fit_optimum_law(const std::vector<HyperparameterCell>& cells,
                                  const std::string& hyperparameter, bool in_compute);

}  // namespace ladder::scaling
