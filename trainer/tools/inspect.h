// `ladder inspect PATH...`: a readable summary of a checkpoint, a trace, or a prepared dataset;
// given several traces or run folders (a sweep's folder, say), the hidden matrices' top singular
// values (trainer/run/spectra.h) of each run against its width.
#pragma once

#include <string>
#include <vector>

namespace ladder {

// Prints the summary to stdout; throws ladder::Error for a path that is none of these.
void inspect(const std::string& path);

// Every trace under `paths` (trace.h5 files, or folders searched recursively), one row per run in
// order of width: the last recorded top singular value of each kind of hidden matrix (attn.wq,
// mlp.w_down, ...), averaged over the layers.
void inspect_spectra(const std::vector<std::string>& paths);

// `ladder inspect --verify PATH...`: every checkpoint given, or found in a run folder's
// checkpoints/, checked for completeness and against its tensors' checksums
// (trainer/run/checkpoint.h); one line each. Throws ladder::Error naming the damaged ones, if any.
void verify_checkpoints(const std::vector<std::string>& paths);

}  // namespace ladder
