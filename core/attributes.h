// Named values that describe a run (the trace's attributes, trainer/trace_schema.h): each part of a
// run (the model, each parallelism, the parametrization) lists its own next to its code.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <variant>

namespace ladder {

using Attribute = std::variant<int64_t, double, std::string>;
using Attributes = std::map<std::string, Attribute>;

// Adds `more` to `into`; a name given twice is a programming error (std::logic_error).
void merge_attributes(Attributes& into, const Attributes& more);

}  // namespace ladder
