// `ladder fit`: points in, a law (or isoFLOP profiles, or learning-rate transfer) fitted, a table
// on stdout, fit.json and plots in the output folder.
//
//   fit.json   every parameter under its name in the law's formula, with its 95% bootstrap
//              interval; the settings; the compute-optimal allocation (chinchilla); the holdout
//              check; the isoFLOP budgets or learning-rate curves; the warnings. Deterministic: the
//              same input and options give the same bytes.
//   *.png      via gnuplot when it is installed, each beside its .dat data and .gp script:
//              loss_vs_compute (points and the fitted frontier or predictions), residuals,
//              isoflop, lr_transfer, wd_transfer.
#pragma once

#include <string>
#include <vector>

#include "scaling/fit.h"
#include "scaling/points.h"

namespace ladder::scaling {

struct FitCommand {
  std::vector<std::string> inputs;  // run folders, trace.h5 files, CSV files
  std::string law = "chinchilla";   // a law of laws.h, or "isoflop"
  std::string out_dir = ".";
  PointOptions points;
  FitOptions fit;
  int64_t holdout = 0;      // keep this many of the largest model sizes out of the fit
  bool in_compute = false;  // --law hyperparameters: optima as laws of C instead of N and D
  // Instead of a law: the loss-optimal value of a hyperparameter per width or depth ("lr" or
  // "weight_decay"; "" for a law).
  std::string transfer;
  std::string transfer_axis = "width";  // the transfer's axis: "width" or "depth" (--along)
  bool plots = true;
};

// Runs the command; user mistakes throw ladder::Error. Returns the exit status.
int run_fit(const FitCommand& command);

}  // namespace ladder::scaling
