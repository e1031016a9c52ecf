// `ladder inspect PATH`: a readable summary of a checkpoint, a trace, or a prepared dataset.
#pragma once

#include <string>

namespace ladder {

// Prints the summary to stdout; throws ladder::Error for a path that is none of these.
void inspect(const std::string& path);

}  // namespace ladder
