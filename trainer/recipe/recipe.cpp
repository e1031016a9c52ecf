#include "trainer/recipe/recipe.h"

#include <toml++/toml.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <sstream>

#include "core/data_source.h"
#include "core/error.h"
#include "core/format.h"

namespace ladder {
namespace fs = std::filesystem;
namespace {

// ----- Values as they come from TOML, with where they came from
// -----------------------------------

struct Origin {
  std::string file;  // a recipe file, or "--set key=value"
  int64_t line = 0;  // 0 when there is no line (a --set, a default)
  std::string where() const { return line > 0 ? file + ":" + std::to_string(line) : file; }
};

struct Value {
  enum class Kind { Int, Float, Bool, String, IntArray, FloatArray, StringArray, Other };
  Kind kind = Kind::Other;
  int64_t i = 0;
  double f = 0;
  bool b = false;
  std::string s;
  std::vector<int64_t> ints;
  std::vector<double> floats;
  std::vector<std::string> strings;
  std::string type_name;  // for messages: "an integer", "a string", ...
};

struct Setting {
  Value value;
  Origin origin;
  int64_t order =
      0;  // settings are validated in the order they were read, so the first error is first
};
using Settings = std::map<std::string, Setting>;

std::string in_quotes(const std::string& s) {
  return "\"" + s + "\"";
}

Value value_of(const toml::node& node) {
  Value v;
  switch (node.type()) {
    case toml::node_type::integer:
      v.kind = Value::Kind::Int, v.i = *node.value<int64_t>(), v.type_name = "an integer";
      v.type_name += " (" + std::to_string(v.i) + ")";
      break;
    case toml::node_type::floating_point:
      v.kind = Value::Kind::Float, v.f = *node.value<double>(), v.type_name = "a float";
      break;
    case toml::node_type::boolean:
      v.kind = Value::Kind::Bool, v.b = *node.value<bool>(), v.type_name = "a boolean";
      break;
    case toml::node_type::string:
      v.kind = Value::Kind::String, v.s = *node.value<std::string>();
      v.type_name = "a string (" + in_quotes(v.s) + ")";
      break;
    case toml::node_type::array: {
      v.type_name = "an array";
      const toml::array& a = *node.as_array();
      bool ints = true, numbers = true, strings = true;
      for (const auto& e : a) {
        ints = ints && e.is_integer();
        numbers = numbers && e.is_number();
        strings = strings && e.is_string();
      }
      if (ints) {  // an empty array too: a list key of any type takes it
        v.kind = Value::Kind::IntArray;
        for (const auto& e : a)
          v.ints.push_back(*e.value<int64_t>());
      } else if (numbers) {
        v.kind = Value::Kind::FloatArray;
        for (const auto& e : a)
          v.floats.push_back(*e.value<double>());
      } else if (strings) {
        v.kind = Value::Kind::StringArray;
        for (const auto& e : a)
          v.strings.push_back(*e.value<std::string>());
      } else {
        v.type_name = "an array of mixed types";
      }
      break;
    }
    case toml::node_type::table:
      v.type_name = "a table";
      break;
    default:
      v.type_name = "a date or time";
      break;
  }
  return v;
}

// ----- The schema -------------------------------------------------------------------------------

enum class Type { Int, Float, Bool, String, IntList, Intermediate, FloatList, StringList };

struct KeySpec {
  std::string key;
  Type type;
  std::string doc;
  Value default_value;
  double min = -std::numeric_limits<double>::infinity();
  double max = std::numeric_limits<double>::infinity();
  bool min_open = false, max_open = false;  // exclusive bounds
  std::vector<std::string> choices;         // for strings (and the words of Intermediate)
  std::function<void(Recipe&, const Value&)> store;
  std::function<Value(const Recipe&)> load;

  KeySpec& at_least(double v) { return min = v, min_open = false, *this; }
  KeySpec& above(double v) { return min = v, min_open = true, *this; }
  KeySpec& at_most(double v) { return max = v, max_open = false, *this; }
  KeySpec& below(double v) { return max = v, max_open = true, *this; }
  KeySpec& one_of(std::vector<std::string> c) { return choices = std::move(c), *this; }
};

Value int_value(int64_t v) {
  Value x;
  x.kind = Value::Kind::Int, x.i = v;
  return x;
}
Value float_value(double v) {
  Value x;
  x.kind = Value::Kind::Float, x.f = v;
  return x;
}
Value bool_value(bool v) {
  Value x;
  x.kind = Value::Kind::Bool, x.b = v;
  return x;
}
Value string_value(std::string v) {
  Value x;
  x.kind = Value::Kind::String, x.s = std::move(v);
  return x;
}

KeySpec spec(std::string name, Type type, Value default_value, std::string doc) {
  KeySpec k;
  k.key = std::move(name), k.type = type, k.default_value = std::move(default_value);
  k.doc = std::move(doc);
  return k;
}

// One key bound to a field of the typed Recipe: `store` writes a checked value, `load` reads it
// back. `section` is a member of Recipe (&Recipe::train) or a function to a nested one (kMoe).
template <class Section, class S>
KeySpec key(std::string name, Section section, int64_t S::*field, int64_t def, std::string doc) {
  KeySpec k = spec(std::move(name), Type::Int, int_value(def), std::move(doc));
  k.store = [=](Recipe& r, const Value& v) { std::invoke(section, r).*field = v.i; };
  k.load = [=](const Recipe& r) { return int_value(std::invoke(section, r).*field); };
  return k;
}
template <class Section, class S>
KeySpec key(std::string name, Section section, double S::*field, double def, std::string doc) {
  KeySpec k = spec(std::move(name), Type::Float, float_value(def), std::move(doc));
  k.store = [=](Recipe& r, const Value& v) { std::invoke(section, r).*field = v.f; };
  k.load = [=](const Recipe& r) { return float_value(std::invoke(section, r).*field); };
  return k;
}
template <class Section, class S>
KeySpec key(std::string name, Section section, bool S::*field, bool def, std::string doc) {
  KeySpec k = spec(std::move(name), Type::Bool, bool_value(def), std::move(doc));
  k.store = [=](Recipe& r, const Value& v) { std::invoke(section, r).*field = v.b; };
  k.load = [=](const Recipe& r) { return bool_value(std::invoke(section, r).*field); };
  return k;
}
// The list keys: a Value's kind and member for each element type.
template <class T>
struct ListKey;
template <>
struct ListKey<int64_t> {
  static constexpr Type type = Type::IntList;
  static constexpr Value::Kind kind = Value::Kind::IntArray;
  static constexpr auto member = &Value::ints;
};
template <>
struct ListKey<double> {
  static constexpr Type type = Type::FloatList;
  static constexpr Value::Kind kind = Value::Kind::FloatArray;
  static constexpr auto member = &Value::floats;
};
template <>
struct ListKey<std::string> {
  static constexpr Type type = Type::StringList;
  static constexpr Value::Kind kind = Value::Kind::StringArray;
  static constexpr auto member = &Value::strings;
};
template <class Section, class S, class T>
KeySpec key(std::string name, Section section, std::vector<T> S::*field, std::string doc) {
  using L = ListKey<T>;
  Value empty;
  empty.kind = L::kind;
  KeySpec k = spec(std::move(name), L::type, empty, std::move(doc));
  k.store = [=](Recipe& r, const Value& v) { std::invoke(section, r).*field = v.*(L::member); };
  k.load = [=](const Recipe& r) {
    Value v;
    v.kind = L::kind, v.*(L::member) = std::invoke(section, r).*field;
    return v;
  };
  return k;
}
template <class Section, class S>
KeySpec key(std::string name, Section section, std::string S::*field, const char* def,
            std::string doc) {
  KeySpec k = spec(std::move(name), Type::String, string_value(def), std::move(doc));
  k.store = [=](Recipe& r, const Value& v) { std::invoke(section, r).*field = v.s; };
  k.load = [=](const Recipe& r) { return string_value(std::invoke(section, r).*field); };
  return k;
}

// A choice bound to an enum field: the TOML names come from the enum's table (core/choice.h).
template <class Section, class S, class E, size_t N>
KeySpec key(std::string name, Section section, E S::*field, E def, const Choice<E> (&names)[N],
            std::string doc) {
  KeySpec k =
      spec(std::move(name), Type::String, string_value(choice_name(names, def)), std::move(doc));
  for (const auto& c : names)
    k.choices.push_back(c.name);
  k.store = [=, &names](Recipe& r, const Value& v) {
    std::invoke(section, r).*field = choice_value(names, v.s);
  };
  k.load = [=, &names](const Recipe& r) {
    return string_value(choice_name(names, std::invoke(section, r).*field));
  };
  return k;
}

// The architecture sections' one home is the model config (model.moe, model.hybrid, ...).
constexpr auto kMoe = [](auto& r) -> auto& {
  return r.model.moe;
};
constexpr auto kHybrid = [](auto& r) -> auto& {
  return r.model.hybrid;
};
constexpr auto kParscale = [](auto& r) -> auto& {
  return r.model.parscale;
};

const std::vector<KeySpec>& schema() {
  static const std::vector<KeySpec> keys = [] {
    using R = Recipe;
    std::vector<KeySpec> k;
    // [run]
    k.push_back(key("run.name", &R::run, &RunConfig::name, "run",
                    "run name; the run lives in out_dir/name/ (letters, digits, . _ - =)"));
    k.push_back(key("run.out_dir", &R::run, &RunConfig::out_dir, "runs", "folder of runs"));
    k.push_back(key("run.seed", &R::run, &RunConfig::seed, 0,
                    "seeds initialisation and data order (DESIGN contracts 3 and 4)")
                    .at_least(0));
    // [data]
    k.push_back(key("data.path", &R::data, &DataConfig::path, "data/brown",
                    "a dataset folder written by `ladder prep`"));
    k.push_back(key("data.seq_len", &R::data, &DataConfig::seq_len, 256, "context length in tokens")
                    .at_least(1));
    k.push_back(key("data.mixture", &R::data, &DataConfig::mixture,
                    "train on a weighted mixture of these sources instead of the whole training "
                    "split: domains of data.path (\"press\", \"news=press+editorial\") or other "
                    "datasets (\"data/web\", \"web=data/web:en\"); empty: the whole split"));
    k.push_back(key("data.weights", &R::data, &DataConfig::weights,
                    "one weight per data.mixture source (>= 0, not all 0; normalised): the share "
                    "of the training sequences drawn from it"));
    // [model]
    k.push_back(key("model.arch", &R::model, &ModelConfig::arch, models::Arch::Dense,
                    models::kArchNames, "architecture"));
    k.push_back(key("model.d_model", &R::model, &ModelConfig::d_model, 256, "width").at_least(1));
    k.push_back(
        key("model.n_layers", &R::model, &ModelConfig::n_layers, 4, "depth (blocks)").at_least(1));
    k.push_back(
        key("model.n_heads", &R::model, &ModelConfig::n_heads, 4, "attention heads").at_least(1));
    k.push_back(key("model.n_kv_heads", &R::model, &ModelConfig::n_kv_heads, 0,
                    "key/value heads for grouped-query attention; 0: n_heads")
                    .at_least(0));
    k.push_back(key("model.ffn_hidden", &R::model, &ModelConfig::ffn_hidden, 0,
                    "SwiGLU hidden size; 0: ffn_multiplier x d_model rounded up to ffn_multiple_of")
                    .at_least(0));
    k.push_back(key("model.ffn_multiplier", &R::model, &ModelConfig::ffn_multiplier, 8.0 / 3.0,
                    "SwiGLU hidden size as a multiple of d_model (LLaMA: 8/3)")
                    .above(0));
    k.push_back(key("model.ffn_multiple_of", &R::model, &ModelConfig::ffn_multiple_of, 64,
                    "the derived SwiGLU hidden size is rounded up to a multiple of this")
                    .at_least(1));
    k.push_back(
        key("model.norm_eps", &R::model, &ModelConfig::norm_eps, 1e-5, "RMSNorm epsilon").above(0));
    k.push_back(key("model.rope_theta", &R::model, &ModelConfig::rope_theta, 10000.0,
                    "rotary embedding base")
                    .above(0));
    k.push_back(key("model.qk_norm", &R::model, &ModelConfig::qk_norm, false,
                    "RMSNorm on queries and keys (Wortsman et al. 2023)"));
    k.push_back(key("model.tie_embeddings", &R::model, &ModelConfig::tie_embeddings, false,
                    "share the embedding and readout matrices"));
    k.push_back(key("model.z_loss", &R::model, &ModelConfig::z_loss, 0.0,
                    "weight of the z-loss on the log-partition of the logits (PaLM); 0: off")
                    .at_least(0));
    // [moe]
    k.push_back(key("moe.experts", kMoe, &MoeConfig::experts, 8, "routed experts per MoE layer")
                    .at_least(1));
    k.push_back(
        key("moe.top_k", kMoe, &MoeConfig::top_k, 2, "experts each token is sent to").at_least(1));
    k.push_back(key("moe.shared_experts", kMoe, &MoeConfig::shared_experts, 0,
                    "experts every token goes through (DeepSeekMoE), of expert_ffn each")
                    .at_least(0));
    k.push_back(key("moe.expert_ffn", kMoe, &MoeConfig::expert_ffn, 0,
                    "SwiGLU hidden size of each expert; 0: model.ffn_hidden / granularity")
                    .at_least(0));
    k.push_back(key("moe.granularity", kMoe, &MoeConfig::granularity, 1.0,
                    "G = model.ffn_hidden / expert_ffn (Krajewski et al. 2024); read when "
                    "expert_ffn = 0, derived otherwise")
                    .above(0));
    k.push_back(key("moe.moe_every", kMoe, &MoeConfig::moe_every, 1,
                    "layer l (from 0) is routed when (l + 1) % moe_every = 0; the others dense")
                    .at_least(1));
    k.push_back(key("moe.capacity_factor", kMoe, &MoeConfig::capacity_factor, 0.0,
                    "assignments an expert takes, x tokens x top_k / experts; 0: dropless")
                    .at_least(0));
    k.push_back(key("moe.aux_loss", kMoe, &MoeConfig::aux_loss, 0.01,
                    "weight of the Switch/GShard load-balancing loss; 0: off")
                    .at_least(0));
    k.push_back(key("moe.router_z_loss", kMoe, &MoeConfig::router_z_loss, 0.001,
                    "weight of the ST-MoE router z-loss; 0: off")
                    .at_least(0));
    k.push_back(key("moe.gate", kMoe, &MoeConfig::gate, models::Gate::Softmax, models::kGateNames,
                    "router scores: softmax over experts, or sigmoid per expert (DeepSeek-V3)"));
    k.push_back(key("moe.balance", kMoe, &MoeConfig::balance, models::Balance::Aux,
                    models::kBalanceNames,
                    "load balancing: aux (the auxiliary loss alone), or bias (DeepSeek-V3's "
                    "auxiliary-loss-free expert bias)"));
    k.push_back(key("moe.bias_update_rate", kMoe, &MoeConfig::bias_update_rate, 0.001,
                    "balance = \"bias\": the bias of an expert above (below) the mean load falls "
                    "(rises) by this after each step")
                    .above(0));
    // [hybrid]
    k.push_back(key("hybrid.pattern", kHybrid, &HybridConfig::pattern, "MMMA",
                    "per-layer letters repeated over the depth: M = Mamba-2 (SSD), A = attention"));
    k.push_back(key("hybrid.ssm_state", kHybrid, &HybridConfig::ssm_state, 64,
                    "N: the SSM state size per head")
                    .at_least(1));
    k.push_back(key("hybrid.ssm_head_dim", kHybrid, &HybridConfig::ssm_head_dim, 64,
                    "P: channels per SSM head; (expand x d_model) / P heads")
                    .at_least(1));
    k.push_back(key("hybrid.conv_kernel", kHybrid, &HybridConfig::conv_kernel, 4,
                    "width of the causal depthwise convolution before the SSM")
                    .at_least(1));
    k.push_back(key("hybrid.chunk", kHybrid, &HybridConfig::chunk, 64,
                    "Q: chunk length of the SSD algorithm (need not divide data.seq_len)")
                    .at_least(1));
    k.push_back(
        key("hybrid.expand", kHybrid, &HybridConfig::expand, 2, "d_inner = expand x d_model")
            .at_least(1));
    k.push_back(key("hybrid.window", kHybrid, &HybridConfig::window, 0,
                    "sliding-window attention in the A layers, in tokens; 0: full causal")
                    .at_least(0));
    // [parscale]
    k.push_back(key("parscale.streams", kParscale, &ParscaleConfig::streams, 1,
                    "P: parallel streams, each the input with its own learned prefixes")
                    .at_least(1));
    k.push_back(key("parscale.prefix_tokens", kParscale, &ParscaleConfig::prefix_tokens, 48,
                    "learnable key/value prefix length per stream and attention layer")
                    .at_least(0));
    k.push_back(key("parscale.aggregation_smoothing", kParscale,
                    &ParscaleConfig::aggregation_smoothing, 0.1,
                    "epsilon: the streams' weights are (1 - eps) softmax + eps / P")
                    .at_least(0)
                    .below(1));
    // [parallel]
    k.push_back(key("parallel.tp", &R::parallel, &ParallelConfig::tp, 1, "tensor-parallel size")
                    .at_least(1));
    k.push_back(key("parallel.pp", &R::parallel, &ParallelConfig::pp, 1, "pipeline-parallel size")
                    .at_least(1));
    k.push_back(key("parallel.dp", &R::parallel, &ParallelConfig::dp, 0,
                    "data-parallel size; 0: world size / (tp x pp x islands)")
                    .at_least(0));
    k.push_back(
        key("parallel.islands", &R::parallel, &ParallelConfig::islands, 1, "DiLoCo replicas")
            .at_least(1));
    k.push_back(key("parallel.ep", &R::parallel, &ParallelConfig::ep, 1,
                    "expert-parallel size: experts split over groups of ep data-parallel ranks")
                    .at_least(1));
    k.push_back(key("parallel.sequence_parallel", &R::parallel, &ParallelConfig::sequence_parallel,
                    false,
                    "shard activations by token (batch x seq) between tensor-parallel regions"));
    k.push_back(key("parallel.schedule", &R::parallel, &ParallelConfig::schedule,
                    parallel::ScheduleKind::OneFOneB, parallel::kScheduleKindNames,
                    "pipeline schedule: 1f1b, gpipe, or interleaved (virtual stages)"));
    k.push_back(key("parallel.virtual_stages", &R::parallel, &ParallelConfig::virtual_stages, 1,
                    "model chunks per pipeline rank; > 1 only with schedule = \"interleaved\"")
                    .at_least(1));
    k.push_back(key("parallel.stage_layers", &R::parallel, &ParallelConfig::stage_layers,
                    "layers of each (virtual) pipeline stage, pp x virtual_stages numbers summing "
                    "to model.n_layers; []: balanced by parallel.stage_balance"));
    k.push_back(key("parallel.stage_balance", &R::parallel, &ParallelConfig::stage_balance,
                    parallel::StageBalance::Flops, parallel::kStageBalanceNames,
                    "what the automatic split of layers into stages balances: flops or params "
                    "(the embedding counts on the first stage, the readout on the last)"));
    k.push_back(key("parallel.microbatches", &R::parallel, &ParallelConfig::microbatches, 0,
                    "micro-batches per step and rank; 0: global_batch / (dp x micro_batch), the "
                    "only value allowed")
                    .at_least(0));
    k.push_back(key("parallel.bucket_mb", &R::parallel, &ParallelConfig::bucket_mb, 25.0,
                    "MiB of gradients per data-parallel all-reduce (or reduce-scatter) bucket")
                    .above(0));
    k.push_back(key("parallel.overlap_grad_reduce", &R::parallel,
                    &ParallelConfig::overlap_grad_reduce, true,
                    "start reducing a bucket during the backward pass as soon as its gradients are "
                    "complete"));
    // [diloco]
    k.push_back(key("diloco.inner_steps", &R::diloco, &DilocoConfig::inner_steps, 100,
                    "H: inner optimizer steps between outer steps")
                    .at_least(1));
    k.push_back(key("diloco.outer_lr", &R::diloco, &DilocoConfig::outer_lr, 0.7,
                    "learning rate of the outer Nesterov SGD on the averaged pseudo-gradient")
                    .above(0));
    k.push_back(key("diloco.outer_momentum", &R::diloco, &DilocoConfig::outer_momentum, 0.9,
                    "Nesterov momentum of the outer SGD; 0: plain SGD")
                    .at_least(0)
                    .below(1));
    k.push_back(key("diloco.fragments", &R::diloco, &DilocoConfig::fragments, 1,
                    "F: streaming DiLoCo cuts the model into F pieces synchronised on staggered "
                    "steps (fragment f on steps f x H / F mod H)")
                    .at_least(1));
    k.push_back(key("diloco.overlap_steps", &R::diloco, &DilocoConfig::overlap_steps, 0,
                    "tau: inner steps that run while a fragment's exchange is in flight, before "
                    "its outer update is applied; below inner_steps")
                    .at_least(0));
    k.push_back(key("diloco.mixing", &R::diloco, &DilocoConfig::mixing, 0.5,
                    "alpha, with overlap_steps > 0: the island keeps alpha of its own fragment "
                    "and takes 1 - alpha of the global one")
                    .at_least(0)
                    .at_most(1));
    k.push_back(key("diloco.pseudo_grad_dtype", &R::diloco, &DilocoConfig::pseudo_grad_dtype,
                    parallel::PseudoGradDtype::Fp32, parallel::kPseudoGradDtypeNames,
                    "how pseudo-gradients travel: fp32 (all-reduce), bf16, or int8 / int4 with an "
                    "fp32 absmax scale per 128 values (all-gathered, averaged in fp32)"));
    k.push_back(key("diloco.inner_state", &R::diloco, &DilocoConfig::inner_state,
                    parallel::InnerState::Keep, parallel::kInnerStateNames,
                    "the inner AdamW's moments at an outer step: keep, or reset (fragments = 1)"));
    k.push_back(key("diloco.single_island", &R::diloco, &DilocoConfig::single_island, false,
                    "with parallel.islands = 1, run the outer loop anyway (DiLoCo with M = 1); "
                    "otherwise one island is plain training"));
    // [train]
    k.push_back(key("train.steps", &R::train, &TrainConfig::steps, 0,
                    "optimizer steps; give steps or tokens")
                    .at_least(0));
    k.push_back(key("train.tokens", &R::train, &TrainConfig::tokens, 0,
                    "token budget, rounded up to whole steps; give steps or tokens")
                    .at_least(0));
    k.push_back(key("train.global_batch", &R::train, &TrainConfig::global_batch, 32,
                    "sequences per optimizer step (per island)")
                    .at_least(1));
    k.push_back(key("train.micro_batch", &R::train, &TrainConfig::micro_batch, 8,
                    "the most sequences per forward/backward on one rank: the step uses the "
                    "largest divisor of global_batch / dp not above it (derived when smaller)")
                    .at_least(1));
    k.push_back(key("train.log_every", &R::train, &TrainConfig::log_every, 10,
                    "a progress line and a trace row every this many steps")
                    .at_least(1));
    k.push_back(key("train.peak_gflops", &R::train, &TrainConfig::peak_gflops, 0.0,
                    "peak GFLOP/s per rank that MFU divides by; 0: measure a matmul in the run's "
                    "precision at start")
                    .at_least(0));
    k.push_back(key("train.precision", &R::train, &TrainConfig::precision, Precision::Auto,
                    kPrecisionNames,
                    "fp32, bf16 (matmuls and attention in bf16, fp32 master weights), or auto: "
                    "resolved at start to bf16 on CUDA and on CPUs whose bf16 matmul is at least "
                    "twice as fast as fp32, else fp32"));
    k.push_back(key("train.device", &R::train, &TrainConfig::device, DeviceKind::Cpu,
                    kDeviceKindNames,
                    "cpu, or cuda (one GPU per rank, chosen by the rank's index on its node)"));
    k.push_back(key("train.threads", &R::train, &TrainConfig::threads, 0,
                    "LibTorch intra-op threads per rank; 0: the node's cores / ranks on the node")
                    .at_least(0));
    k.push_back(
        key("train.fused_kernels", &R::train, &TrainConfig::fused_kernels, true,
            "the fused CPU kernels of kernels/ (RMSNorm with the residual add, rotary q and "
            "k, SwiGLU, the chunked readout cross-entropy, one-pass AdamW); false: the "
            "LibTorch composites everywhere (on CUDA too: see train.fused_cuda_kernels)"));
    k.push_back(
        key("train.fused_cuda_kernels", &R::train, &TrainConfig::fused_cuda_kernels, false,
            "the fused CUDA kernels of kernels/cuda/ (add + RMSNorm, rotary, SwiGLU, the "
            "cross-entropy on bf16 logits) on train.device = cuda, with train.fused_kernels; "
            "off until a GPU run has tested them against the composites"));
    k.push_back(key("train.sync_free_step", &R::train, &TrainConfig::sync_free_step, false,
                    "a step the host launches without waiting for the device: loss and gradient "
                    "norm summed on the device, AdamW through ATen's at::_fused_adamw_ with the "
                    "clipping factor and the finite check as device tensors, loss and norm read "
                    "only before a log line, an evaluation or a checkpoint (a non-finite step "
                    "skips the update and stops the run at that read). The same training as false "
                    "to fp32 rounding, not bitwise; false: the host reads loss and norm every "
                    "step, clips, then updates"));
    k.push_back(key("train.cuda_graph", &R::train, &TrainConfig::cuda_graph, false,
                    "capture the sync-free step's device part (forward, backward, norm, update) "
                    "once as a CUDA graph and replay it every step after the first few; needs "
                    "train.device = cuda and train.sync_free_step, one rank, no MoE or DiLoCo; "
                    "off until a GPU run has compared it with the eager step"));
    // [optim]
    k.push_back(key("optim.lr", &R::optim, &OptimConfig::lr, 3e-3, "peak learning rate").above(0));
    k.push_back(key("optim.weight_decay", &R::optim, &OptimConfig::weight_decay, 0.1,
                    "decoupled weight decay (AdamW)")
                    .at_least(0));
    k.push_back(key("optim.beta1", &R::optim, &OptimConfig::beta1, 0.9, "AdamW beta1")
                    .at_least(0)
                    .below(1));
    k.push_back(key("optim.beta2", &R::optim, &OptimConfig::beta2, 0.95, "AdamW beta2")
                    .at_least(0)
                    .below(1));
    k.push_back(key("optim.eps", &R::optim, &OptimConfig::eps, 1e-8, "AdamW epsilon").above(0));
    k.push_back(key("optim.grad_clip", &R::optim, &OptimConfig::grad_clip, 1.0,
                    "clip the global gradient norm to this; 0: off")
                    .at_least(0));
    k.push_back(key("optim.zero", &R::optim, &OptimConfig::zero, 0,
                    "ZeRO stage: 0 (off) or 1 (optimizer states sharded over dp)")
                    .at_least(0)
                    .at_most(1));
    // [schedule]
    k.push_back(key("schedule.kind", &R::schedule, &ScheduleConfig::kind, optim::LrSchedule::Cosine,
                    optim::kLrScheduleNames, "learning-rate schedule"));
    k.push_back(
        key("schedule.warmup", &R::schedule, &ScheduleConfig::warmup, 100, "linear warmup steps")
            .at_least(0));
    k.push_back(key("schedule.warmup_tokens", &R::schedule, &ScheduleConfig::warmup_tokens, 0,
                    "the warm-up as a token count instead (rounded up to whole steps), so that it "
                    "stays the same when the batch is a sweep axis; 0: schedule.warmup steps")
                    .at_least(0));
    k.push_back(key("schedule.final_lr_fraction", &R::schedule, &ScheduleConfig::final_lr_fraction,
                    0.1, "cosine and wsd end at this fraction of the peak learning rate")
                    .at_least(0)
                    .at_most(1));
    k.push_back(key("schedule.decay_fraction", &R::schedule, &ScheduleConfig::decay_fraction, 0.2,
                    "wsd: fraction of the steps spent in the cooldown (Haegele et al. 2024)")
                    .above(0)
                    .at_most(1));
    k.push_back(key("schedule.decay_shape", &R::schedule, &ScheduleConfig::decay_shape,
                    optim::DecayShape::Linear, optim::kDecayShapeNames,
                    "wsd cooldown shape: linear or 1-sqrt"));
    // [mup]
    k.push_back(key("mup.parametrization", &R::mup, &MupConfig::parametrization,
                    optim::Parametrization::Sp, optim::kParametrizationNames,
                    "standard (sp) or maximal-update (mup) parametrization"));
    k.push_back(
        key("mup.base_width", &R::mup, &MupConfig::base_width, 256,
            "the width hyperparameters were tuned at; muP multiplier m = d_model / base_width")
            .at_least(1));
    k.push_back(key("mup.base_depth", &R::mup, &MupConfig::base_depth, 0,
                    "the depth hyperparameters were tuned at; depth multiplier m_L = n_layers / "
                    "base_depth; 0: no depth scaling")
                    .at_least(0));
    k.push_back(key("mup.depth_alpha", &R::mup, &MupConfig::depth_alpha, 0.0,
                    "residual branches x m_L^-alpha (CompleteP, Dey et al. 2025): 0, 0.5 or 1")
                    .at_least(0)
                    .at_most(1));
    k.push_back(key("mup.output_multiplier", &R::mup, &MupConfig::output_multiplier, 1.0,
                    "alpha_out: logits x alpha_out (sp) or alpha_out / m (mup)")
                    .above(0));
    k.push_back(key("mup.attention_multiplier", &R::mup, &MupConfig::attention_multiplier, 1.0,
                    "attention scores x this / sqrt(d_head) (sp) or this / d_head (mup)")
                    .above(0));
    k.push_back(key("mup.readout_zero_init", &R::mup, &MupConfig::readout_zero_init, false,
                    "mup: the readout starts at zero"));
    k.push_back(key("mup.wd_rule", &R::mup, &MupConfig::wd_rule, optim::WdRule::Constant,
                    optim::kWdRuleNames,
                    "weight decay of hidden matrices: constant (lambda), width_power (lambda x "
                    "m^e), timescale (lambda = B / (eta tau D))"));
    k.push_back(key("mup.wd_width_exponent", &R::mup, &MupConfig::wd_width_exponent, 1.0,
                    "width_power: the exponent e of lambda x m^e"));
    k.push_back(key("mup.wd_timescale", &R::mup, &MupConfig::wd_timescale, 0.0,
                    "timescale: the AdamW timescale tau = B / (eta lambda D) as a fraction of the "
                    "run (Power Lines, Bergsma et al. 2025)")
                    .at_least(0));
    // [checkpoint]
    k.push_back(key("checkpoint.every_steps", &R::checkpoint, &CheckpointConfig::every_steps, 200,
                    "periodic checkpoints for resuming; 0: off")
                    .at_least(0));
    k.push_back(key("checkpoint.keep", &R::checkpoint, &CheckpointConfig::keep, 2,
                    "periodic checkpoints kept (intermediate ones are always kept)")
                    .at_least(1));
    {
      KeySpec s = spec("checkpoint.intermediate", Type::Intermediate, string_value("log2"),
                       "checkpoints kept for law fitting: \"log2\" (every power of two), \"none\", "
                       "or a list of points in intermediate_unit");
      for (const auto& c : kIntermediateRuleNames)
        s.choices.push_back(c.name);
      s.store = [](Recipe& r, const Value& v) {
        auto& i = r.checkpoint.intermediate;
        if (v.kind == Value::Kind::IntArray) {
          i.rule = IntermediateRule::List, i.points = v.ints;
        } else {
          i.rule = choice_value(kIntermediateRuleNames, v.s), i.points.clear();
        }
      };
      s.load = [](const Recipe& r) {
        const auto& i = r.checkpoint.intermediate;
        if (i.rule != IntermediateRule::List)
          return string_value(choice_name(kIntermediateRuleNames, i.rule));
        Value v;
        v.kind = Value::Kind::IntArray, v.ints = i.points;
        return v;
      };
      k.push_back(s);
    }
    k.push_back(key("checkpoint.intermediate_unit", &R::checkpoint,
                    &CheckpointConfig::intermediate_unit, PointUnit::Steps, kPointUnitNames,
                    "unit of an explicit intermediate list"));
    // [eval]
    k.push_back(key("eval.every_steps", &R::eval, &EvalConfig::every_steps, 100,
                    "evaluate on the validation split every this many steps; 0: off")
                    .at_least(0));
    k.push_back(
        key("eval.tokens", &R::eval, &EvalConfig::tokens, 65536, "validation tokens per evaluation")
            .at_least(0));
    k.push_back(key("eval.spectra_every_steps", &R::eval, &EvalConfig::spectra_every_steps, 100,
                    "record every hidden matrix's top singular value (power iteration) in the "
                    "trace every this many steps; 0: off")
                    .at_least(0));
    k.push_back(key("eval.average", &R::eval, &EvalConfig::average, WeightAverage::None,
                    kWeightAverageNames,
                    "also evaluate an average of the weights at every evaluation (the trace's "
                    "eval/average_loss), training unchanged: none, ema (exponential moving "
                    "average, eval.ema_decay), or window (the mean of the weights after each step "
                    "since the previous evaluation)"));
    k.push_back(key("eval.sets", &R::eval, &EvalConfig::sets,
                    "validation sets evaluated besides data.path's whole validation split, each "
                    "a loss column loss_NAME in the trace: sources as data.mixture names them"));
    k.push_back(key("eval.ema_decay", &R::eval, &EvalConfig::ema_decay, 0.999,
                    "eval.average = \"ema\": avg = decay x avg + (1 - decay) x weights after "
                    "each step")
                    .above(0)
                    .below(1));
    return k;
  }();
  return keys;
}

const KeySpec* find_key(const std::string& name) {
  for (const auto& k : schema())
    if (k.key == name) return &k;
  return nullptr;
}

std::vector<std::string> sections() {
  std::vector<std::string> out;
  for (const auto& k : schema()) {
    std::string s = k.key.substr(0, k.key.find('.'));
    if (std::find(out.begin(), out.end(), s) == out.end()) out.push_back(s);
  }
  return out;
}

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j)
    row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] != b[j - 1])});
      diag = up;
    }
  }
  return row[b.size()];
}

// " (did you mean x?)" when a candidate is close enough to be a typo.
std::string suggestion(const std::string& name, const std::vector<std::string>& candidates) {
  std::string best;
  size_t best_d = std::max<size_t>(2, name.size() / 3) + 1;
  for (const auto& c : candidates) {
    // A word that extends or shortens a candidate ("optimizer" for "optim") counts as close.
    const bool affix =
        name.size() >= 3 && c.size() >= 3 && (name.rfind(c, 0) == 0 || c.rfind(name, 0) == 0);
    const size_t d = affix ? 1 : edit_distance(name, c);
    if (d < best_d) best = c, best_d = d;
  }
  return best.empty() ? "" : " (did you mean " + best + "?)";
}

// ----- Reading files and overrides --------------------------------------------------------------

struct Loader {
  Settings settings;
  int64_t order = 0;

  void put(const std::string& name, Value v, Origin origin) {
    // train.steps and train.tokens are two ways to give one length: a later file or override that
    // gives one replaces the other given earlier (the same file giving both stays an error).
    for (const auto& [key, other] :
         {std::pair{"train.steps", "train.tokens"}, std::pair{"train.tokens", "train.steps"}}) {
      auto it = settings.find(other);
      if (name == key && it != settings.end() && it->second.origin.file != origin.file)
        settings.erase(it);
    }
    settings[name] = Setting{std::move(v), std::move(origin), order++};
  }

  void read_table(const toml::table& root, const std::string& file, const fs::path& dir,
                  std::vector<std::string>& chain) {
    if (const toml::node* base = root.get("base")) {
      const std::string where = file + ":" + std::to_string(base->source().begin.line);
      if (!base->is_string()) throw Error(where, "base: expected a string (a recipe path)");
      const fs::path base_path = dir / *base->value<std::string>();
      read_file(base_path.string(), where, chain);
    }
    for (const auto& [k, node] : root) {
      const std::string section(k.str());
      const std::string where = file + ":" + std::to_string(node.source().begin.line);
      if (section == "base") continue;
      const auto known = sections();
      if (!node.is_table()) {
        throw Error(where, section +
                               ": keys belong in a [section]; only `base` may stand at the "
                               "top (sections: " +
                               join(known, ", ") + ")");
      }
      if (std::find(known.begin(), known.end(), section) == known.end()) {
        throw Error(where, "[" + section + "]: unknown section" + suggestion(section, known) +
                               "; sections are " + join(known, ", "));
      }
      for (const auto& [kk, value] : *node.as_table()) {
        put(section + "." + std::string(kk.str()), value_of(value),
            Origin{file, value.source().begin.line});
      }
    }
  }

  void read_file(const std::string& path, const std::string& included_from,
                 std::vector<std::string>& chain) {
    std::error_code ec;
    if (!fs::is_regular_file(path, ec)) {
      if (included_from.empty()) throw Error(path, "no such recipe file");
      throw Error(included_from, "base: no such recipe file " + in_quotes(path));
    }
    const std::string canonical = fs::weakly_canonical(path, ec).string();
    if (std::find(chain.begin(), chain.end(), canonical) != chain.end())
      throw Error(included_from, "base: recipes include each other in a cycle (" +
                                     join(chain, " -> ") + " -> " + canonical + ")");
    chain.push_back(canonical);
    toml::table root;
    try {
      root = toml::parse_file(path);
    } catch (const toml::parse_error& e) {
      throw Error(path + ":" + std::to_string(e.source().begin.line),
                  "invalid TOML: " + std::string(e.description()));
    }
    read_table(root, path, fs::path(path).parent_path(), chain);
    chain.pop_back();
  }

  // `origin`: where the override was written ("sweep.toml:12"); empty: the command line.
  void read_override(const std::string& arg, const std::string& origin = "") {
    const std::string where = origin.empty() ? "--set " + arg : origin;
    const size_t eq = arg.find('=');
    const std::string name = arg.substr(0, eq);
    const size_t dot = name.find('.');
    auto word = [](const std::string& s) {
      return !s.empty() && std::all_of(s.begin(), s.end(), [](unsigned char c) {
        return std::isalnum(c) || c == '_' || c == '-';
      });
    };
    if (eq == std::string::npos || dot == std::string::npos || !word(name.substr(0, dot)) ||
        !word(name.substr(dot + 1)))
      throw Error(where, "expected section.key=value, as in --set optim.lr=3e-3");
    const std::string text = arg.substr(eq + 1);
    if (text.empty()) throw Error(where, "missing value after '='");
    Value value;
    try {
      toml::table t = toml::parse("v = " + text);
      value = value_of(*t.get("v"));
    } catch (const toml::parse_error& e) {
      // A bare word is taken as a string (--set model.arch=dense); anything that looks like TOML
      // but is not is an error.
      const char c = text.front();
      if (c == '"' || c == '\'' || c == '[' || c == '{')
        throw Error(where, "invalid TOML value: " + std::string(e.description()));
      value = string_value(text);
      value.type_name = "a string (" + in_quotes(text) + ")";
    }
    put(name, std::move(value), Origin{where, 0});
  }
};

// ----- Typing, defaults and cross-checks
// ------------------------------------------------------------

std::string range_text(const KeySpec& k) {
  auto num = [&](double v) {
    return k.type == Type::Int ? std::to_string(static_cast<int64_t>(v)) : shortest_float(v);
  };
  const bool lo = std::isfinite(k.min), hi = std::isfinite(k.max);
  if (lo && hi)
    return std::string("in ") + (k.min_open ? "(" : "[") + num(k.min) + ", " + num(k.max) +
           (k.max_open ? ")" : "]");
  if (lo) return std::string(k.min_open ? "> " : ">= ") + num(k.min);
  return std::string(k.max_open ? "< " : "<= ") + num(k.max);
}

// Converts `s` to the key's type in place, or throws with the key's expectation.
void check_value(const KeySpec& k, Setting& s) {
  Value& v = s.value;
  const std::string where = s.origin.where();
  auto expected = [&](const std::string& what) {
    throw Error(where, k.key + ": expected " + what + ", got " + v.type_name);
  };
  switch (k.type) {
    case Type::Int:
      if (v.kind != Value::Kind::Int) expected("an integer");
      break;
    case Type::Float:
      if (v.kind == Value::Kind::Int) {
        v.kind = Value::Kind::Float, v.f = static_cast<double>(v.i);
      } else if (v.kind != Value::Kind::Float) {
        expected("a number");
      }
      if (!std::isfinite(v.f)) throw Error(where, k.key + ": must be finite");
      break;
    case Type::Bool:
      if (v.kind != Value::Kind::Bool) expected("true or false");
      break;
    case Type::String:
      if (v.kind != Value::Kind::String) expected("a string");
      break;
    case Type::IntList:
      if (v.kind != Value::Kind::IntArray) expected("a list of integers");
      break;
    case Type::Intermediate:
      if (v.kind != Value::Kind::String && v.kind != Value::Kind::IntArray)
        expected("\"log2\", \"none\" or a list of integers");
      break;
    case Type::FloatList:
      if (v.kind == Value::Kind::IntArray) {
        v.kind = Value::Kind::FloatArray;
        v.floats.assign(v.ints.begin(), v.ints.end());
      } else if (v.kind != Value::Kind::FloatArray) {
        expected("a list of numbers");
      }
      for (double x : v.floats)
        if (!std::isfinite(x)) throw Error(where, k.key + ": every number must be finite");
      break;
    case Type::StringList:
      if (v.kind == Value::Kind::IntArray && v.ints.empty()) {
        v.kind = Value::Kind::StringArray;
      } else if (v.kind != Value::Kind::StringArray) {
        expected("a list of strings");
      }
      break;
  }
  if (!k.choices.empty() && v.kind == Value::Kind::String &&
      std::find(k.choices.begin(), k.choices.end(), v.s) == k.choices.end()) {
    throw Error(where, k.key + ": must be one of " + join(k.choices, ", ") + "; got " +
                           in_quotes(v.s) + suggestion(v.s, k.choices));
  }
  if (k.type == Type::Int || k.type == Type::Float) {
    const double x = k.type == Type::Int ? static_cast<double>(v.i) : v.f;
    const bool low = k.min_open ? !(x > k.min) : !(x >= k.min);
    const bool high = k.max_open ? !(x < k.max) : !(x <= k.max);
    if (low || high) {
      throw Error(where, k.key + ": must be " + range_text(k) + "; got " +
                             (k.type == Type::Int ? std::to_string(v.i) : shortest_float(v.f)));
    }
  }
}

// Cross-checks and derived values. Errors point at the line of the key that most likely needs to
// change.
class Resolver {
 public:
  Resolver(Recipe& r, const Settings& settings, const std::string& recipe_name, int world_size)
      : r_(r), settings_(settings), recipe_name_(recipe_name), world_(world_size) {}

  void run() {
    data();
    model();
    parallel();
    diloco();
    train();
    schedule();
    checkpoint();
    eval();
    mup();
  }

 private:
  std::string where(const std::string& key) const {
    auto it = settings_.find(key);
    return it == settings_.end() ? recipe_name_ : it->second.origin.where();
  }
  bool given(const std::string& key) const { return settings_.count(key) > 0; }
  [[noreturn]] void fail(const std::string& key, const std::string& what) const {
    throw Error(where(key), key + ": " + what);
  }
  static std::string n(int64_t v) { return std::to_string(v); }

  void data() {
    const DataConfig& d = r_.data;
    try {
      parse_data_sources(d.mixture, d.path);
    } catch (const Error& e) {
      fail("data.mixture", e.detail());
    }
    try {
      parse_data_sources(r_.eval.sets, d.path);
    } catch (const Error& e) {
      fail("eval.sets", e.detail());
    }
    if (d.mixture.empty() && !d.weights.empty())
      fail("data.weights", "weighs the sources of data.mixture, which names none");
    if (!d.mixture.empty()) {
      if (d.weights.size() != d.mixture.size())
        fail("data.weights", "needs one weight per data.mixture source (" + n(d.mixture.size()) +
                                 "); got " + n(d.weights.size()));
      double sum = 0;
      for (double w : d.weights) {
        if (w < 0) fail("data.weights", "must be >= 0; got " + shortest_float(w));
        sum += w;
      }
      if (!(sum > 0)) fail("data.weights", "are all 0: no source to draw from");
    }
    if (!r_.eval.sets.empty() && r_.eval.every_steps == 0)
      fail("eval.sets", "are evaluated at every evaluation: it needs eval.every_steps > 0");
  }

  void model() {
    auto& m = r_.model;
    if (m.n_kv_heads == 0) m.n_kv_heads = m.n_heads, r_.derived.push_back("model.n_kv_heads");
    if (m.d_model % m.n_heads != 0)
      fail("model.d_model",
           "must be divisible by model.n_heads (" + n(m.n_heads) + "); got " + n(m.d_model));
    if ((m.d_model / m.n_heads) % 2 != 0)
      fail("model.n_heads", "the head dimension d_model / n_heads = " + n(m.d_model / m.n_heads) +
                                " must be even for rotary embeddings");
    if (m.n_kv_heads > m.n_heads || m.n_heads % m.n_kv_heads != 0)
      fail("model.n_kv_heads",
           "must divide model.n_heads (" + n(m.n_heads) + "); got " + n(m.n_kv_heads));
    if (m.ffn_hidden == 0) {
      const auto raw = static_cast<int64_t>(std::ceil(m.ffn_multiplier * m.d_model));
      m.ffn_hidden = (raw + m.ffn_multiple_of - 1) / m.ffn_multiple_of * m.ffn_multiple_of;
      r_.derived.push_back("model.ffn_hidden");
    }
    moe();
    hybrid();
    const std::string& name = r_.run.name;
    if (!is_folder_name(name))
      fail("run.name",
           "must be letters, digits, '.', '_', '-' or '=' (a folder name); got " + in_quotes(name));
  }

  // [hybrid] is checked only when model.arch = "hybrid" (the model reads it only then).
  void hybrid() {
    auto& m = r_.model;
    const HybridConfig& h = m.hybrid;
    if (m.arch != models::Arch::Hybrid) return;
    if (h.pattern.empty()) fail("hybrid.pattern", "must name at least one layer (M or A)");
    for (size_t i = 0; i < h.pattern.size(); ++i)
      if (h.pattern[i] != 'M' && h.pattern[i] != 'A')
        fail("hybrid.pattern",
             "letter " + std::to_string(i + 1) + " is '" + std::string(1, h.pattern[i]) +
                 "': layers are M (Mamba-2) or A (attention); got " + in_quotes(h.pattern));
    const int64_t inner = h.expand * m.d_model;
    if (inner % h.ssm_head_dim != 0)
      fail("hybrid.ssm_head_dim",
           "must divide expand x d_model = " + n(inner) + "; got " + n(h.ssm_head_dim));
  }

  // [moe] is checked and resolved only when model.arch = "moe" (the model reads it only then).
  void moe() {
    auto& m = r_.model;
    MoeConfig& e = m.moe;
    if (m.arch != models::Arch::Moe) return;
    if (e.top_k > e.experts)
      fail("moe.top_k", "must not exceed moe.experts (" + n(e.experts) + "); got " + n(e.top_k));
    if (e.expert_ffn == 0) {
      const double size = static_cast<double>(m.ffn_hidden) / e.granularity;
      e.expert_ffn = static_cast<int64_t>(std::llround(size));
      if (e.expert_ffn < 1 || std::abs(size - static_cast<double>(e.expert_ffn)) > 1e-9 * size)
        fail("moe.granularity", "model.ffn_hidden / granularity = " + n(m.ffn_hidden) + " / " +
                                    shortest_float(e.granularity) + " = " + shortest_float(size) +
                                    " is not a whole number of hidden units; choose another "
                                    "granularity or set moe.expert_ffn");
      r_.derived.push_back("moe.expert_ffn");
    } else {
      e.granularity = static_cast<double>(m.ffn_hidden) / static_cast<double>(e.expert_ffn);
    }
    if (e.moe_every > m.n_layers)
      fail("moe.moe_every", "routes no layer: it exceeds model.n_layers (" + n(m.n_layers) +
                                "); got " + n(e.moe_every));
    m.moe = e;
  }

  void parallel() {
    auto& p = r_.parallel;
    const int64_t model_ranks = p.tp * p.pp * p.islands;
    if (p.dp == 0) {
      if (world_ % model_ranks != 0)
        fail(given("parallel.tp")   ? "parallel.tp"
             : given("parallel.pp") ? "parallel.pp"
                                    : "parallel.islands",
             "tp x pp x islands = " + n(p.tp) + " x " + n(p.pp) + " x " + n(p.islands) + " = " +
                 n(model_ranks) + " does not divide the world size " + n(world_));
      p.dp = world_ / model_ranks;
      r_.derived.push_back("parallel.dp");
    } else if (p.dp * model_ranks != world_) {
      fail("parallel.dp", "tp x pp x dp x islands = " + n(p.tp) + " x " + n(p.pp) + " x " +
                              n(p.dp) + " x " + n(p.islands) + " = " + n(p.dp * model_ranks) +
                              ", but the job has " + n(world_) + " rank" +
                              (world_ == 1 ? "" : "s") + " (set parallel.dp = 0 to derive it)");
    }
    const auto& m = r_.model;
    if (m.n_heads % p.tp != 0 || m.n_kv_heads % p.tp != 0)
      fail("parallel.tp", "must divide model.n_heads (" + n(m.n_heads) +
                              ") and model.n_kv_heads (" + n(m.n_kv_heads) + "); got " + n(p.tp));
    if (m.experts() > 0 && m.moe.expert_ffn % p.tp != 0)
      fail("parallel.tp",
           "must divide moe.expert_ffn (" + n(m.moe.expert_ffn) + "); got " + n(p.tp));
    if (m.arch == models::Arch::Hybrid &&
        (m.hybrid.expand * m.d_model / m.hybrid.ssm_head_dim) % p.tp)
      fail("parallel.tp", "must divide the SSM heads (expand x d_model / ssm_head_dim = " +
                              n(m.hybrid.expand * m.d_model / m.hybrid.ssm_head_dim) + "); got " +
                              n(p.tp));
    if (p.ep > 1 && m.arch != models::Arch::Moe)
      fail("parallel.ep", "splits experts: it needs model.arch = \"moe\"; got " +
                              in_quotes(choice_name(models::kArchNames, m.arch)));
    if (p.dp % p.ep != 0)
      fail("parallel.ep", "must divide parallel.dp (" + n(p.dp) +
                              "): expert-parallel groups are "
                              "carved out of the data-parallel ranks; got " +
                              n(p.ep));
    if (m.experts() % p.ep != 0)
      fail("parallel.ep", "must divide moe.experts (" + n(m.moe.experts) + "); got " + n(p.ep));
    if (r_.model.ffn_hidden % p.tp != 0)
      fail("parallel.tp",
           "must divide the SwiGLU hidden size (" + n(r_.model.ffn_hidden) + "); got " + n(p.tp));
    const int64_t stages = p.pp * p.virtual_stages;
    if (p.virtual_stages > 1 && p.schedule != parallel::ScheduleKind::Interleaved)
      fail("parallel.virtual_stages",
           "needs parallel.schedule = \"interleaved\"; got " + n(p.virtual_stages) + " with \"" +
               choice_name(parallel::kScheduleKindNames, p.schedule) + "\"");
    if (p.schedule == parallel::ScheduleKind::Interleaved && (p.pp < 2 || p.virtual_stages < 2))
      fail(p.pp < 2 ? "parallel.pp" : "parallel.virtual_stages",
           "the interleaved schedule needs parallel.pp >= 2 and parallel.virtual_stages >= 2; got "
           "pp = " +
               n(p.pp) + ", virtual_stages = " + n(p.virtual_stages));
    if (stages > m.n_layers)
      fail(p.virtual_stages > 1 ? "parallel.virtual_stages" : "parallel.pp",
           "pp x virtual_stages = " + n(stages) + " stages cannot exceed model.n_layers (" +
               n(m.n_layers) + "): every stage needs a layer");
    if (!p.stage_layers.empty()) {
      int64_t sum = 0;
      for (int64_t l : p.stage_layers) {
        if (l < 1) fail("parallel.stage_layers", "every stage needs at least one layer");
        sum += l;
      }
      if (static_cast<int64_t>(p.stage_layers.size()) != stages || sum != m.n_layers)
        fail("parallel.stage_layers",
             "needs pp x virtual_stages = " + n(stages) + " entries summing to model.n_layers (" +
                 n(m.n_layers) + "); got " + n(static_cast<int64_t>(p.stage_layers.size())) +
                 " summing to " + n(sum));
    }
    if (p.sequence_parallel && p.tp == 1)
      fail("parallel.sequence_parallel", "needs parallel.tp > 1");
    if (p.sequence_parallel && m.streams() > 1)
      fail("parallel.sequence_parallel",
           "cannot split the tokens of parscale.streams > 1: the streams of a token meet in the "
           "aggregation on one rank; use tensor parallelism without it");
    if (p.sequence_parallel && r_.data.seq_len % p.tp != 0)
      fail("data.seq_len", "must be divisible by parallel.tp (" + n(p.tp) +
                               ") with sequence parallelism; got " + n(r_.data.seq_len));
  }

  void diloco() {
    const auto& d = r_.diloco;
    if (!diloco_active(r_)) return;
    if (d.fragments > d.inner_steps)
      fail("diloco.fragments", "must not exceed diloco.inner_steps (" + n(d.inner_steps) +
                                   "): each fragment synchronises on its own step of the " +
                                   n(d.inner_steps) + "; got " + n(d.fragments));
    if (d.overlap_steps >= d.inner_steps)
      fail("diloco.overlap_steps", "must be below diloco.inner_steps (" + n(d.inner_steps) +
                                       "): an exchange lands before the fragment's next one "
                                       "starts; got " +
                                       n(d.overlap_steps));
    if (d.inner_state == parallel::InnerState::Reset && d.fragments > 1)
      fail("diloco.inner_state",
           "\"reset\" restarts the whole inner optimizer, so it needs diloco.fragments = 1; got " +
               n(d.fragments) + " fragments");
  }

  void train() {
    auto& t = r_.train;
    auto& p = r_.parallel;
    if (t.fused_cuda_kernels && t.device != DeviceKind::Cuda)
      fail("train.fused_cuda_kernels",
           "applies to train.device = \"cuda\" only (the CPU's fused kernels are "
           "train.fused_kernels)");
    if (t.fused_cuda_kernels && !t.fused_kernels)
      fail("train.fused_cuda_kernels", "needs train.fused_kernels = true (the fused paths)");
    if (t.cuda_graph) {
      // What a captured step cannot do: wait for the host, or for another rank (the NCCL
      // backend's waits poll from the host).
      if (t.device != DeviceKind::Cuda)
        fail("train.cuda_graph", "applies to train.device = \"cuda\" only");
      if (!t.sync_free_step)
        fail("train.cuda_graph",
             "needs train.sync_free_step = true (a captured step cannot wait for the host)");
      if (r_.model.experts() > 0)
        fail("train.cuda_graph",
             "not with routed experts (MoE): their routing counts and balancing run on the host "
             "every step");
      if (diloco_active(r_))
        fail("train.cuda_graph", "not with DiLoCo: its exchanges and outer steps need the host");
      if (p.tp * p.pp * p.dp > 1)
        fail("train.cuda_graph", "one rank only for now (tp x pp x dp = " + n(p.tp * p.pp * p.dp) +
                                     "): the NCCL backend's waits poll from the host");
    }
    if (t.global_batch % p.dp != 0)
      fail("train.global_batch", "must be a multiple of parallel.dp (" + n(p.dp) +
                                     ": each data-parallel rank takes an equal share); got " +
                                     n(t.global_batch));
    // train.micro_batch is what a rank holds per forward: the step's micro-batches are the largest
    // divisor of the rank's share not above it, so any batch on a sweep axis runs.
    const int64_t share = t.global_batch / p.dp;
    if (share % t.micro_batch != 0) {
      int64_t m = std::min(t.micro_batch, share);
      while (share % m != 0)
        --m;
      t.micro_batch = m, r_.derived.push_back("train.micro_batch");
    }
    const int64_t micro = share / t.micro_batch;
    if (p.microbatches == 0) {
      p.microbatches = micro, r_.derived.push_back("parallel.microbatches");
    } else if (p.microbatches != micro) {
      fail("parallel.microbatches",
           "must equal train.global_batch / (parallel.dp x train.micro_batch) = " + n(micro) +
               " (or 0 to derive it); got " + n(p.microbatches));
    }
    if (p.pp > 1 && p.schedule == parallel::ScheduleKind::OneFOneB && p.microbatches < p.pp)
      fail("parallel.pp",
           "1F1B needs at least pp micro-batches per step (parallel.microbatches = " +
               n(p.microbatches) + " < pp = " + n(p.pp) +
               "): raise train.global_batch or lower train.micro_batch, or use "
               "schedule = \"gpipe\"");
    if (p.schedule == parallel::ScheduleKind::Interleaved && p.microbatches % p.pp != 0)
      fail("parallel.schedule", "interleaving needs parallel.microbatches (" + n(p.microbatches) +
                                    ") to be a multiple of parallel.pp (" + n(p.pp) + ")");
    // Every island takes its own global_batch each step: the step's tokens are all islands'.
    const int64_t tokens_per_step = p.islands * t.global_batch * r_.data.seq_len;
    if ((t.steps > 0) == (t.tokens > 0))
      fail(t.steps > 0 ? "train.tokens" : "train.steps",
           t.steps > 0 ? "give train.steps or train.tokens, not both"
                       : "the run needs a length: set train.steps or train.tokens");
    if (t.tokens > 0) {
      t.steps = (t.tokens + tokens_per_step - 1) / tokens_per_step;
      r_.derived.push_back("train.steps");
    } else {
      r_.derived.push_back("train.tokens");
    }
    t.tokens = t.steps * tokens_per_step;
  }

  void schedule() {
    auto& s = r_.schedule;
    if (s.warmup_tokens > 0) {
      if (given("schedule.warmup"))
        fail("schedule.warmup_tokens",
             "gives the warm-up in tokens and schedule.warmup in steps: give one of them");
      const int64_t per_step = r_.parallel.islands * r_.train.global_batch * r_.data.seq_len;
      s.warmup = (s.warmup_tokens + per_step - 1) / per_step;
      r_.derived.push_back("schedule.warmup");
    }
    if (s.warmup >= r_.train.steps && s.kind != optim::LrSchedule::Constant)
      fail("schedule.warmup",
           "must be smaller than train.steps (" + n(r_.train.steps) + "); got " + n(s.warmup));
    if (s.warmup > r_.train.steps)
      fail("schedule.warmup",
           "must not exceed train.steps (" + n(r_.train.steps) + "); got " + n(s.warmup));
  }

  void checkpoint() {
    const auto& c = r_.checkpoint;
    if (c.intermediate.rule != IntermediateRule::List) return;
    const int64_t end = c.intermediate_unit == PointUnit::Steps ? r_.train.steps : r_.train.tokens;
    int64_t previous = 0;
    for (int64_t point : c.intermediate.points) {
      if (point <= previous)
        fail("checkpoint.intermediate", "a list must be strictly increasing and positive; got " +
                                            n(point) + " after " + n(previous));
      if (point > end)
        fail("checkpoint.intermediate",
             n(point) + " lies past the end of the run (" + n(end) + " " +
                 choice_name(kPointUnitNames, c.intermediate_unit) + ")");
      previous = point;
    }
  }

  void mup() {
    const auto& m = r_.mup;
    if (m.depth_alpha != 0 && m.depth_alpha != 0.5 && m.depth_alpha != 1)
      fail("mup.depth_alpha",
           "must be 0, 0.5 or 1 (the depth parametrizations of CompleteP); got " +
               shortest_float(m.depth_alpha));
    if (m.depth_alpha > 0 && m.base_depth == 0)
      fail("mup.depth_alpha", "needs mup.base_depth (the depth the hyperparameters were tuned at)");
    if (m.parametrization == optim::Parametrization::Mup && r_.model.tie_embeddings)
      fail("model.tie_embeddings",
           "muP needs an untied readout (the embedding keeps its scale with width, the readout's "
           "output shrinks as 1/m); set model.tie_embeddings = false");
    if (m.wd_rule == optim::WdRule::Timescale && m.wd_timescale <= 0)
      fail("mup.wd_rule",
           "\"timescale\" needs mup.wd_timescale > 0 (the AdamW timescale as a "
           "fraction of the run)");
    if (m.wd_rule != optim::WdRule::Timescale && m.wd_timescale > 0)
      fail("mup.wd_timescale", "is read only with mup.wd_rule = \"timescale\"; got wd_rule " +
                                   in_quotes(choice_name(optim::kWdRuleNames, m.wd_rule)));
    r_.model.scales = optim::scale_factors(m, r_.model);
  }

  void eval() {
    if (r_.eval.every_steps > 0 && r_.eval.tokens < r_.data.seq_len)
      fail("eval.tokens", "must hold at least one sequence of data.seq_len (" + n(r_.data.seq_len) +
                              ") tokens when eval.every_steps > 0; got " + n(r_.eval.tokens));
    if (r_.eval.average != WeightAverage::None) {
      if (r_.eval.every_steps == 0)
        fail("eval.average", "is evaluated at every evaluation: it needs eval.every_steps > 0");
      if (diloco_active(r_))
        fail("eval.average",
             "is not yet taken with DiLoCo (which evaluates the islands' global model); set it "
             "to \"none\"");
    }
  }

  Recipe& r_;
  const Settings& settings_;
  std::string recipe_name_;
  int64_t world_;
};

void read_overrides(Loader& loader, const RecipeOptions& options) {
  for (size_t i = 0; i < options.overrides.size(); ++i)
    loader.read_override(options.overrides[i],
                         i < options.override_origins.size() ? options.override_origins[i] : "");
}

// The schema's entry for a setting the files or overrides gave, or an error that suggests the
// nearest key.
const KeySpec& known_key(const std::string& key_name, const Setting& setting) {
  if (const KeySpec* spec = find_key(key_name)) return *spec;
  const std::string section = key_name.substr(0, key_name.find('.'));
  std::vector<std::string> candidates;
  for (const auto& k : schema())
    if (k.key.compare(0, section.size() + 1, section + ".") == 0) candidates.push_back(k.key);
  if (candidates.empty()) {
    throw Error(setting.origin.where(), section + ": unknown section" +
                                            suggestion(section, sections()) + "; sections are " +
                                            join(sections(), ", "));
  }
  throw Error(setting.origin.where(), key_name + ": unknown key" +
                                          suggestion(key_name, candidates) +
                                          "; recipes/README.md lists every key");
}

// The settings in reading order, so that the first mistake in the file is the one reported.
std::vector<std::pair<const std::string*, Setting*>> in_reading_order(Settings& settings) {
  std::vector<std::pair<const std::string*, Setting*>> ordered;
  for (auto& [k, s] : settings)
    ordered.emplace_back(&k, &s);
  std::sort(ordered.begin(), ordered.end(),
            [](const auto& a, const auto& b) { return a.second->order < b.second->order; });
  return ordered;
}

Recipe resolve(Loader& loader, const std::string& name, const RecipeOptions& options) {
  read_overrides(loader, options);
  if (options.world_size < 1) throw Error("world", "the world size must be at least 1");

  Recipe recipe;
  recipe.source = name;
  for (const auto& k : schema())
    k.store(recipe, k.default_value);
  for (auto& [key_name, setting] : in_reading_order(loader.settings)) {
    const KeySpec* spec = &known_key(*key_name, *setting);
    check_value(*spec, *setting);
    spec->store(recipe, setting->value);
  }
  Resolver(recipe, loader.settings, name, options.world_size).run();
  return recipe;
}

}  // namespace

bool diloco_active(const Recipe& r) {
  return r.parallel.islands > 1 || r.diloco.single_island;
}

bool is_folder_name(const std::string& name) {
  return !name.empty() && name[0] != '.' &&
         std::all_of(name.begin(), name.end(), [](unsigned char c) {
           return std::isalnum(c) || c == '_' || c == '-' || c == '.' || c == '=';
         });
}

std::string toml_string(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\r':
        out += "\\r";
        break;
      default:
        if (c < 0x20 || c == 0x7f) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  return out + "\"";
}

namespace {

std::string value_text(const Value& v) {
  switch (v.kind) {
    case Value::Kind::Int:
      return std::to_string(v.i);
    case Value::Kind::Float:
      return shortest_float(v.f);
    case Value::Kind::Bool:
      return v.b ? "true" : "false";
    case Value::Kind::String:
      return toml_string(v.s);
    case Value::Kind::IntArray: {
      std::string out = "[";
      for (size_t i = 0; i < v.ints.size(); ++i)
        out += (i ? ", " : "") + std::to_string(v.ints[i]);
      return out + "]";
    }
    case Value::Kind::FloatArray: {
      std::string out = "[";
      for (size_t i = 0; i < v.floats.size(); ++i)
        out += (i ? ", " : "") + shortest_float(v.floats[i]);
      return out + "]";
    }
    case Value::Kind::StringArray: {
      std::string out = "[";
      for (size_t i = 0; i < v.strings.size(); ++i)
        out += (i ? ", " : "") + toml_string(v.strings[i]);
      return out + "]";
    }
    default:
      return "?";
  }
}

}  // namespace

Recipe load_recipe(const std::string& path, const RecipeOptions& options) {
  Loader loader;
  std::vector<std::string> chain;
  loader.read_file(path, "", chain);
  return resolve(loader, path, options);
}

Recipe parse_recipe(const std::string& text, const std::string& name, const std::string& dir,
                    const RecipeOptions& options) {
  Loader loader;
  toml::table root;
  try {
    root = toml::parse(text, name);
  } catch (const toml::parse_error& e) {
    throw Error(name + ":" + std::to_string(e.source().begin.line),
                "invalid TOML: " + std::string(e.description()));
  }
  std::vector<std::string> chain;
  loader.read_table(root, name, dir, chain);
  return resolve(loader, name, options);
}

bool Recipe::is_derived(const std::string& key) const {
  return std::find(derived.begin(), derived.end(), key) != derived.end();
}

std::string resolved_recipe_toml(const Recipe& recipe) {
  std::ostringstream out;
  out << "# Resolved by ladder from " << (recipe.source.empty() ? "text" : recipe.source)
      << ": every key, defaults included.\n"
      << "# Keys marked 'derived' are 0 (or \"auto\") here and computed at load or start time, so "
         "the\n"
      << "# recipe stays valid for any world size and machine.\n";
  std::string section;
  for (const auto& k : schema()) {
    const std::string s = k.key.substr(0, k.key.find('.'));
    if (s != section) {
      out << (section.empty() ? "" : "\n") << "[" << s << "]\n";
      section = s;
    }
    const std::string name = k.key.substr(s.size() + 1);
    if (recipe.is_derived(k.key)) {
      const char* unresolved = k.key == "train.precision" ? "\"auto\"" : "0";
      out << name << " = " << unresolved << "  # derived: " << value_text(k.load(recipe)) << "\n";
    } else {
      out << name << " = " << value_text(k.load(recipe)) << "\n";
    }
  }
  return out.str();
}

void write_resolved_recipe(const Recipe& recipe, const std::string& path) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp);
    out << resolved_recipe_toml(recipe);
    if (!out) throw Error(path, "cannot write the resolved recipe");
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0)
    throw Error(path, "cannot write the resolved recipe");
}

std::map<std::string, GivenValue> given_recipe_values(const std::string& path,
                                                      const RecipeOptions& options) {
  Loader loader;
  std::vector<std::string> chain;
  loader.read_file(path, "", chain);
  read_overrides(loader, options);
  std::map<std::string, GivenValue> out;
  auto given = [](const Value& v, const std::string& where) {
    GivenValue g;
    g.toml = value_text(v), g.where = where;
    g.numeric = v.kind == Value::Kind::Int || v.kind == Value::Kind::Float;
    g.number = v.kind == Value::Kind::Int ? static_cast<double>(v.i) : v.f;
    return g;
  };
  for (const auto& k : schema())
    out[k.key] = given(k.default_value, "default");
  for (auto& [key_name, setting] : in_reading_order(loader.settings)) {
    const KeySpec& spec = known_key(*key_name, *setting);
    check_value(spec, *setting);
    out[*key_name] = given(setting->value, setting->origin.where());
  }
  return out;
}

std::string recipe_value_toml(const Recipe& recipe, const std::string& key) {
  const KeySpec* spec = find_key(key);
  if (!spec) throw std::out_of_range("no recipe key " + key);
  return value_text(spec->load(recipe));
}

std::string recipe_key_type(const std::string& key) {
  for (const auto& doc : recipe_schema())
    if (doc.key == key) return doc.type;
  return "";
}

std::vector<RecipeKeyDoc> recipe_schema() {
  std::vector<RecipeKeyDoc> out;
  const char* types[] = {"integer",          "float",
                         "boolean",          "string",
                         "list of integers", "string or integer list",
                         "list of numbers",  "list of strings"};
  for (const auto& k : schema()) {
    std::string doc = k.doc;
    if (!k.choices.empty() && k.type == Type::String) doc += " (" + join(k.choices, " | ") + ")";
    if (std::isfinite(k.min) || std::isfinite(k.max)) doc += "; " + range_text(k);
    out.push_back({k.key, types[static_cast<int>(k.type)], value_text(k.default_value), doc});
  }
  return out;
}

}  // namespace ladder
