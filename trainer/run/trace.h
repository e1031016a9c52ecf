// The loss trace (DESIGN.md contract 6): runs/NAME/trace.h5, the fitter's only input. Its columns
// and attributes are declared once, in core/trace_schema.h (docs/training.md's "Trace file" is
// generated from it): this writer creates every declared column, appends rows by column name,
// and refuses a column or attribute the schema does not declare.
//
// Every append opens the file, writes and closes it, so a reader (h5py) sees a complete file
// whenever the trainer is not in the middle of a write. On resume, rows past the resumed step are
// dropped: they belong to the part of the run that the checkpoint does not contain.
//
// A process killed in the middle of an append can leave the file damaged. So with every checkpoint
// the trace is copied to trace.h5.bak (through a temporary file and a rename): it holds every row
// up to that checkpoint, which is all a resume from it keeps. Reopening a trace that cannot be read
// restores it from that copy (the damaged file kept as trace.h5.damaged).
#pragma once

#include <cstdint>
#include <limits>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "core/attributes.h"

namespace ladder {

using TraceAttribute = Attribute;  // core/attributes.h

// One row of /train, by column name (core/trace_schema.h train_columns()); a column not set is
// written as the schema's missing value (NaN for a part that is off, 0 for a count). The per-stage
// columns come from stage_bubble and stage_activation_bytes (S = 0 .. pp - 1).
struct TrainRecord {
  // Throws std::logic_error for a column the schema does not declare.
  void set(std::string_view column, double value);
  double get(std::string_view column) const;
  std::vector<double> stage_bubble, stage_activation_bytes;

 private:
  std::map<std::string, double, std::less<>> values_;
};

struct EvalRecord {
  int64_t step, tokens;
  double flops, loss;
  double average_loss = std::numeric_limits<double>::quiet_NaN();  // eval.average
  double bytes_per_token = std::numeric_limits<double>::quiet_NaN();
  // One per eval set (eval.sets), in the order the Trace was given them.
  std::vector<double> set_loss = {}, set_bytes_per_token = {};
};

class Trace {
 public:
  // Creates the trace, or (resume_step >= 0) reopens it and drops rows with step > resume_step.
  // Columns an older trace lacks are added, NaN for its existing rows. Every attribute must be
  // declared by the schema (std::logic_error otherwise).
  // `stages`: pipeline stages, one column of bubble and activation memory each.
  // `spectra`: the hidden matrices whose top singular values append_spectra() records.
  // `eval_sets`: the eval sets' names, one loss_S and bytes_per_token_S column each.
  Trace(std::string path, const std::map<std::string, TraceAttribute>& attributes,
        int64_t resume_step, int stages = 1, std::vector<std::string> spectra = {},
        std::vector<std::string> eval_sets = {});
  void append(const TrainRecord& r);
  void append(const EvalRecord& r);
  void append_checkpoint(int64_t step, int64_t tokens, bool intermediate);
  // Copies the trace to trace.h5.bak (above); after each checkpoint.
  void back_up() const;
  // One value per matrix named at construction, after `step` optimizer steps.
  void append_spectra(int64_t step, const std::vector<double>& top_singular_values);
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  int stages_;
  std::vector<std::string> spectra_;
  std::vector<std::string> eval_sets_;
};

}  // namespace ladder
