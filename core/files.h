// Whole text files: written in one go, an unwritable file a ladder::Error naming it.
#pragma once

#include <string>

namespace ladder {

// Writes `text` to `path` (replacing it), byte for byte; ladder::Error(path, ...) on failure.
void write_text_file(const std::string& path, const std::string& text);

}  // namespace ladder
