#include "core/trace_schema.h"

#include <limits>
#include <stdexcept>

namespace ladder::trace_schema {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr Type I = Type::Integer, F = Type::Float, T = Type::Text;

const char* type_name(Type t) {
  return t == Type::Integer ? "integer" : t == Type::Float ? "float" : "text";
}

}  // namespace

const std::vector<Column>& train_columns() {
  static const std::vector<Column> columns = {
      {"step", I, 0, "optimizer steps completed"},
      {"tokens", I, 0, "training tokens seen (all islands)"},
      {"flops", F, 0, "model FLOPs so far: flops_per_token x tokens"},
      {"loss", F, kNaN, "the last step's mean training loss (the islands' mean with DiLoCo)"},
      {"lr", F, kNaN, "the last step's learning rate"},
      {"grad_norm", F, kNaN, "the last step's global gradient norm, before clipping"},
      {"tokens_per_s", F, kNaN,
       "training tokens per second over the interval (not eval or checkpoints)"},
      {"mfu", F, kNaN, "model FLOP/s over the peak of the log's `MFU is stated against` line"},
      {"elapsed_s", F, kNaN, "seconds since the loop started (this process)"},
      {"step_s", F, kNaN, "rank 0's seconds per step, averaged over the interval"},
      {"compute_s", F, kNaN, "step_s minus comm_s"},
      {"comm_s", F, kNaN,
       "seconds per step inside data parallelism's collectives (what overlap did not hide)"},
      {"comm_bytes", F, 0,
       "bytes rank 0 sent per step in data parallelism's collectives (ring model of bus "
       "bandwidth)"},
      {"tp_comm_s", F, 0,
       "seconds per step in the tensor-parallel layers' collectives (inside compute_s)"},
      {"tp_comm_bytes", F, 0, "bytes per step of the tensor-parallel layers' collectives"},
      {"pp_p2p_bytes", F, 0, "the most any pipeline rank sent per step (activations, gradients)"},
      {"ep_comm_s", F, 0, "seconds per step in the experts' all-to-alls (inside compute_s)"},
      {"ep_comm_bytes", F, 0, "bytes per step of the experts' all-to-alls"},
      {"moe_aux_loss", F, kNaN, "routed layers' Switch auxiliary loss (NaN without routed layers)"},
      {"moe_z_loss", F, kNaN, "routed layers' router z-loss"},
      {"moe_load_max_over_mean", F, kNaN, "the busiest expert's assignments over the mean"},
      {"moe_load_cv", F, kNaN, "coefficient of variation of the experts' load"},
      {"moe_dropped_fraction", F, kNaN, "assignments over capacity / all assignments"},
      {"diloco_bytes_per_token", F, kNaN,
       "bytes rank 0 sent to the other islands per training token (NaN without DiLoCo)"},
      {"diloco_dp_bytes_per_token", F, kNaN,
       "what data parallelism over the islands would have sent per token"},
      {"diloco_outer_s", F, kNaN, "seconds of an outer step (NaN when the interval had none)"},
  };
  return columns;
}

const std::vector<Column>& stage_columns() {
  static const std::vector<Column> columns = {
      {"stage_bubble_", F, kNaN, "stage S's share of its schedule spent waiting for other stages"},
      {"stage_activation_bytes_", F, kNaN,
       "stage S's peak memory during the schedule above the step's starting level"},
  };
  return columns;
}

const std::vector<Column>& eval_columns() {
  static const std::vector<Column> columns = {
      {"step", I, 0, "optimizer steps completed"},
      {"tokens", I, 0, "training tokens seen"},
      {"flops", F, 0, "model FLOPs so far"},
      {"loss", F, kNaN, "mean loss over the first eval.tokens of the validation split"},
      {"bytes_per_token", F, kNaN,
       "bytes of text per predicted token of those tokens (loss / bytes_per_token: nats per "
       "byte, comparable across tokenizers)"},
      {"average_loss", F, kNaN,
       "the same with the averaged weights (eval.average; NaN without it): "
       "trainer/run/weight_average.h"},
  };
  return columns;
}

const std::vector<Column>& eval_set_columns() {
  static const std::vector<Column> columns = {
      {"loss_", F, kNaN,
       "mean loss over the first eval.tokens of eval set S's validation split (eval.sets, by "
       "name)"},
      {"bytes_per_token_", F, kNaN, "bytes of text per predicted token of those tokens"},
  };
  return columns;
}

const std::vector<Column>& checkpoint_columns() {
  static const std::vector<Column> columns = {
      {"step", I, 0, "the checkpoint's step"},
      {"tokens", I, 0, "training tokens seen at it"},
      {"intermediate", I, 0, "1: kept for law fitting (checkpoint.intermediate), never pruned"},
  };
  return columns;
}

const std::vector<Group>& groups() {
  static const std::vector<Column> spectra = {
      {"step", I, 0, "optimizer steps completed (0: at initialisation)"},
  };
  static const std::vector<Group> all = {
      {"train", "log line (train.log_every, and the last step)", &train_columns()},
      {"eval", "evaluation (eval.every_steps, and the last step)", &eval_columns()},
      {"checkpoints", "checkpoint written", &checkpoint_columns()},
      {"spectra",
       "top singular values: at step 0, every eval.spectra_every_steps and at the end; one column "
       "per hidden matrix, by its name (trainer/run/spectra.h)",
       &spectra},
  };
  return all;
}

const std::vector<Attribute>& attributes() {
  static const std::vector<Attribute> all = {
      {"format", T, "\"ladder-trace\""},
      {"version", I, "the trace format's version (trace_schema::kVersion)"},
      // The model (models/describe.h).
      {"arch", T, "dense | moe | hybrid | parscale"},
      {"N", I, "non-embedding parameters"},
      {"total_params", I, "every trainable parameter"},
      {"active_params", I, "parameters used per token (= total_params unless routed)"},
      {"embedding_params", I, "the token embedding's"},
      {"active_N", I, "active non-embedding parameters"},
      {"flops_per_token", F, "model FLOPs per trained token (DESIGN.md contract 9)"},
      {"width", I, "d_model"},
      {"depth", I, "layers"},
      {"n_heads", I, "attention heads"},
      {"vocab_size", I, "the tokenizer's vocabulary"},
      {"streams", I, "ParScale's streams (1 otherwise)"},
      {"P", I, "the same, under the ParScale law's name"},
      {"prefix_tokens", I, "ParScale's key/value prefix per stream and attention layer"},
      {"aggregation_smoothing", F, "ParScale's aggregation smoothing"},
      {"experts", I, "routed experts per MoE layer (0 for a dense model)"},
      {"top_k", I, "experts per token"},
      {"granularity", F, "ffn_hidden / expert_ffn (0 for a dense model)"},
      {"shared_experts", I, "experts every token goes through"},
      {"expert_ffn", I, "an expert's hidden size"},
      {"pattern", T, "the hybrid layer pattern (empty unless hybrid)"},
      {"ssm_state", I, "Mamba-2 state per head"},
      {"ssm_head_dim", I, "Mamba-2 channels per head"},
      {"ssm_chunk", I, "the SSD chunk length"},
      {"ssm_expand", I, "d_inner / d_model"},
      {"conv_kernel", I, "the causal convolution's width"},
      {"attention_window", I, "sliding-window attention (0: full causal)"},
      // The parametrization (optim/parametrization.h).
      {"lr", F, "optim.lr, the peak learning rate"},
      {"weight_decay", F, "optim.weight_decay"},
      {"parametrization", T, "sp | mup"},
      {"base_width", I, "mup.base_width"},
      {"base_depth", I, "mup.base_depth (0: no depth scaling)"},
      {"width_multiplier", F, "m = d_model / base_width"},
      {"depth_multiplier", F, "m_L = n_layers / base_depth (1 without depth scaling)"},
      {"depth_alpha", F, "mup.depth_alpha"},
      {"output_multiplier", F, "mup.output_multiplier"},
      {"attention_multiplier", F, "mup.attention_multiplier"},
      {"wd_rule", T, "constant | width_power | timescale"},
      {"rules", T,
       "the rules in force: a tab-separated table, one line per parameter (name, role, shape, "
       "base_shape, init_std, lr_multiplier, weight_decay, eps)"},
      // DiLoCo (parallel/diloco.h).
      {"islands", I, "DiLoCo islands (1: none)"},
      {"diloco", I, "1 when DiLoCo's outer loop runs"},
      {"diloco_inner_steps", I, "H"},
      {"diloco_outer_lr", F, "the outer Nesterov SGD's learning rate"},
      {"diloco_outer_momentum", F, "its momentum"},
      {"diloco_fragments", I, "streaming DiLoCo's fragments"},
      {"diloco_overlap_steps", I, "inner steps an exchange overlaps"},
      {"diloco_mixing", F, "alpha, with overlap"},
      {"diloco_pseudo_grad_dtype", T, "fp32 | bf16 | int8 | int4"},
      {"diloco_inner_state", T, "keep | reset"},
      // The run (trainer/run/run_context.h).
      {"seq_len", I, "data.seq_len"},
      {"global_batch", I, "sequences per step and island"},
      {"batch_tokens", I, "tokens per step, all islands"},
      {"seed", I, "run.seed"},
      {"precision", T, "fp32 | bf16, as resolved"},
      {"device", T, "cpu | cuda"},
      {"threads", I, "LibTorch threads per rank"},
      {"total_steps", I, "train.steps"},
      {"lr_schedule", T,
       "schedule.kind: constant | cosine | wsd (a constant rate after the warm-up is a stable "
       "run's: `ladder fit --kind stable`)"},
      {"dp", I, "data-parallel ranks"},
      {"tp", I, "tensor-parallel ranks"},
      {"pp", I, "pipeline stages"},
      {"schedule", T, "1f1b | gpipe | interleaved"},
      {"virtual_stages", I, "model chunks per pipeline rank"},
      {"microbatches", I, "micro-batches per rank and step"},
      {"sequence_parallel", I, "1 with sequence parallelism"},
      {"zero", I, "1: ZeRO-1"},
      {"weight_average", T, "eval.average: none | ema | window"},
      {"ema_decay", F, "eval.ema_decay with eval.average = \"ema\" (0 otherwise)"},
      // Where the run's state began (trainer/run/branch.h).
      {"branch_of", T,
       "the run this one branched from (ladder train --branch-from); \"\" otherwise"},
      {"branch_checkpoint", T, "the parent's checkpoint it started from; \"\" otherwise"},
      {"branch_step", I, "the step it branched at (0: not a branch); its rows start after it"},
      {"parent_flops", F, "the training FLOPs up to the branch step, spent by the parent"},
      {"data_mixture", T,
       "the training mixture (data.mixture): \"NAME=WEIGHT ...\", weights normalised; \"\" for "
       "the whole training split"},
      {"eval_sets", T, "the eval sets' names (eval.sets), space-separated"},
      {"recipe", T, "the resolved recipe (TOML)"},
  };
  return all;
}

std::string path(std::string_view group, std::string_view name) {
  for (const Group& g : groups()) {
    if (g.name != group) continue;
    for (const Column& c : *g.columns)
      if (c.name == name) return std::string(group) + "/" + std::string(name);
    if (group == "train")
      for (const Column& c : stage_columns())
        if (name.substr(0, c.name.size()) == c.name) return "train/" + std::string(name);
    if (group == "eval")
      for (const Column& c : eval_set_columns())
        if (name.size() > c.name.size() && name.substr(0, c.name.size()) == c.name)
          return "eval/" + std::string(name);
  }
  throw std::logic_error("trace_schema: no column " + std::string(group) + "/" + std::string(name));
}

bool has_attribute(std::string_view name) {
  for (const Attribute& a : attributes())
    if (a.name == name) return true;
  return false;
}

std::string markdown() {
  std::string s = "Trace format version " + std::to_string(kVersion) +
                  " (core/trace_schema.h, from which this section is generated).\n\n";
  for (const Group& g : groups()) {
    s += "`/" + std::string(g.name) + "`: one row per " + std::string(g.row) + ".\n\n";
    s += "| column | type | what |\n| --- | --- | --- |\n";
    auto row = [&](const Column& c, const std::string& suffix) {
      s += "| `" + std::string(c.name) + suffix + "` | " + type_name(c.type) + " | " +
           std::string(c.doc) + " |\n";
    };
    for (const Column& c : *g.columns)
      row(c, "");
    if (g.name == "train")
      for (const Column& c : stage_columns())
        row(c, "S");
    if (g.name == "eval")
      for (const Column& c : eval_set_columns())
        row(c, "S");
    s += "\n";
  }
  s += "Attributes of `/`:\n\n| attribute | type | what |\n| --- | --- | --- |\n";
  for (const Attribute& a : attributes())
    s += "| `" + std::string(a.name) + "` | " + type_name(a.type) + " | " + std::string(a.doc) +
         " |\n";
  return s;
}

}  // namespace ladder::trace_schema
