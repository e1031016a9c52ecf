// Plots through gnuplot, when it is installed: the script is kept beside the PNG (and its data), so
// a user can restyle a figure without rerunning anything.
#pragma once

#include <string>
#include <vector>

namespace ladder {

bool gnuplot_installed();

// Writes DIR/NAME.gp (a PNG terminal writing NAME.png, then `script`) and runs gnuplot in DIR,
// where the data files the script reads already lie. Returns "NAME.png", or "" with a warning
// appended when gnuplot failed (its output kept in NAME.gnuplot.log).
std::string run_gnuplot(const std::string& dir, const std::string& name, const std::string& script,
                        std::vector<std::string>& warnings);

}  // namespace ladder
