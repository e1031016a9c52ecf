// Numbers and durations as ladder prints them: in log lines, plans and resolved recipes.
#pragma once

#include <string>
#include <vector>

namespace ladder {

// 3 significant-ish figures with a K / M / G suffix: "950", "12.5K", "1.50M", "3.21G".
std::string human_count(double v);

// "0m42s", "12m05s", "1h07m"; "-" for NaN.
std::string format_duration(double seconds);

// The shortest text that reads back to `v`, always a TOML float ("3.0", "0.003", "1e-05").
std::string shortest_float(double v);

// The items with `separator` between them.
std::string join(const std::vector<std::string>& items, const std::string& separator);

}  // namespace ladder
