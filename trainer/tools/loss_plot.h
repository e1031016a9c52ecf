// `ladder plot RUN...`: the training and validation loss curves of one or more runs on one PNG
// (gnuplot, core/plot.h), against tokens, FLOPs or steps, with log axes on request. Reads the runs'
// traces (DESIGN.md contract 6); the data and the gnuplot script are kept beside the picture.
#pragma once

#include <string>
#include <vector>

namespace ladder {

struct LossPlotOptions {
  std::vector<std::string> runs;  // run folders, or their trace.h5 files
  std::string x = "tokens";       // tokens | flops | step
  std::string log = "";           // "", "x", "y" or "xy": which axes are logarithmic
  std::string out;                // the PNG; "": RUN/loss.png for one run, loss.png for several
  std::string eval_set;           // the eval set to plot (eval.sets); "": the validation split
  // Validation losses in nats per byte (the loss over the trace's bytes_per_token), so runs with
  // different tokenizers compare; the training curves are left out (their bytes are not counted).
  bool per_byte = false;
};

// Writes the PNG; returns its path. ladder::Error for a run without a trace, a bad option, or no
// gnuplot.
std::string plot_losses(const LossPlotOptions& options);

}  // namespace ladder
