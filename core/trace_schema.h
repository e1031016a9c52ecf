// The trace's schema (DESIGN.md contract 6): every column of runs/NAME/trace.h5 and every attribute
// of its root, declared once. The trace writer (trainer/run/trace.h) creates, appends and checks
// from these tables, the readers (scaling/, trainer/tools/inspect, plot, sweep indexes) name what
// they read through them, and docs/training.md's trace section is generated from them (markdown(),
// tested to match).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace ladder::trace_schema {

// Bumped when a column or an attribute is added: a trace of an older version gains the new columns
// (NaN, or 0 for integers, in its old rows) when a run resumes.
// 2: step_s, compute_s, comm_s, comm_bytes; 3: tp_comm_*; 4: pp_p2p_bytes, stage_*; 5: spectra;
// 6: ep_comm_*, moe_*; 7: diloco_*; 8: branch_of, branch_checkpoint, branch_step, parent_flops,
// lr_schedule, weight_average, ema_decay, eval/average_loss; 9: eval/bytes_per_token, the eval
// sets' loss_S and bytes_per_token_S, data_mixture, eval_sets
inline constexpr int64_t kVersion = 9;

enum class Type { Integer, Float, Text };

struct Column {
  std::string_view name;
  Type type;
  // What a row holds when the run did not measure it: NaN for a column of a part that is off
  // (routing, DiLoCo), 0 for a count of what did not happen.
  double missing;
  std::string_view doc;
};

struct Group {
  std::string_view name;  // "train": the HDF5 group /train
  std::string_view row;   // one row per ...
  const std::vector<Column>* columns;
};

// /train: one row per log line. Besides these, one stage_bubble_S and stage_activation_bytes_S per
// pipeline stage S (kStageColumns).
const std::vector<Column>& train_columns();
// The per-stage columns, named prefix + S.
const std::vector<Column>& stage_columns();
const std::vector<Column>& eval_columns();
// /eval: one loss_S and bytes_per_token_S per eval set S (eval.sets), named prefix + S.
const std::vector<Column>& eval_set_columns();
const std::vector<Column>& checkpoint_columns();
// The groups in file order (/spectra's columns are the hidden matrices' names, after step).
const std::vector<Group>& groups();

struct Attribute {
  std::string_view name;
  Type type;
  std::string_view doc;
};
// The attributes of /: format and version (the writer's), then the run's.
const std::vector<Attribute>& attributes();

// The column `name` of `group` ("train", "loss") as its HDF5 path ("train/loss"); throws
// std::logic_error for a name the schema does not declare, so a reader cannot drift from it.
std::string path(std::string_view group, std::string_view name);
// Whether the schema declares attribute `name`.
bool has_attribute(std::string_view name);

// The trace format's documentation (docs/training.md, "Trace file"), generated from the tables.
std::string markdown();

}  // namespace ladder::trace_schema
