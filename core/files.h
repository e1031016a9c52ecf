// Whole text files: written in one go, an unwritable file a ladder::Error naming it. Output
// folders: created with their parents, a file in the way or a folder that cannot be made a
// ladder::Error naming it (never a raw std::filesystem error).
#pragma once

#include <string>

namespace ladder {

// Writes `text` to `path` (replacing it), byte for byte, through "<path>.tmp" and a rename, so a
// file at `path` is always whole; ladder::Error(path, ...) on failure.
void write_text_file(const std::string& path, const std::string& text);

// Creates the folder `path` and its parents for a command's output (an existing folder is fine);
// ladder::Error(path, ...) when a file stands at `path` or at one of its parents, or the folder
// cannot be created.
void create_output_folder(const std::string& path);

// The same checks without creating anything: whether create_output_folder(path) would meet a file
// in the way (for checks made on every rank before one of them creates the folder).
void check_output_folder(const std::string& path);

}  // namespace ladder
