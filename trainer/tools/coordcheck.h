// `ladder coordcheck`: the coordinate check of Yang et al. 2021 ("Tensor Programs V";
// microsoft/mup's get_coord_data). The recipe's model is built at several widths (d_model; n_heads
// kept, so the head dimension grows; the SwiGLU and expert hidden sizes kept in proportion) and
// trained a few steps with AdamW at the recipe's constant peak learning rate; before each update
// the mean absolute value of every layer type's output (embedding, attention and MLP branches,
// residual stream, logits) is recorded. In a parametrization whose updates are maximal and stable,
// none of them grows or shrinks with width: the log-log slope against width is about 0. Under SP
// the logits (and, with Adam, the hidden branches) grow with width after the first steps.
//
// Writes OUT/coords.csv (width, seed, step, layer, mean_abs), OUT/slopes.csv (step, layer, slope)
// and OUT/coordcheck.png (gnuplot: one panel per layer type, one line per step).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace ladder {

struct CoordcheckOptions {
  std::string recipe;
  std::vector<std::string> overrides;  // --set section.key=value
  std::vector<int64_t> widths{64, 128, 256, 512, 1024};
  int64_t steps = 5;
  int64_t seeds = 1;
  std::string out_dir;      // "": coordcheck/<recipe file stem>
  int threads = 0;          // 0: every core
  double max_slope = 0.13;  // the bar |slope| for steps >= 2 (microsoft/mup: < 1.2x over 4x width)
};

// The least-squares slope of ln(value) against ln(width); NaN with fewer than two positive values.
double loglog_slope(const std::vector<double>& widths, const std::vector<double>& values);

// Runs the check and prints the slopes; returns 0 (the verdict is printed, not an exit status, so
// that SP's expected failure is a result too). Throws ladder::Error for user mistakes.
int run_coordcheck(const CoordcheckOptions& options);

}  // namespace ladder
