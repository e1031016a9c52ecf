// The parameter store: every trainable tensor of a model, under its canonical name, with its role
// (DESIGN.md contract 1). Models create parameters here and never choose their initial values,
// learning rates or weight decay: optim/ derives those from the role and the width multipliers.
// Checkpoints store each parameter under its name at its full logical shape.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <torch/torch.h>

namespace ladder::models {

enum class Role {
  Embedding,  // token embedding: fan-out grows with width
  Hidden,     // a matrix whose fan-in and fan-out both grow with width
  Readout,    // the output projection to the vocabulary: fan-in grows with width
  Vector,     // norm gains, biases, scalars
};

const char* role_name(Role role);
Role role_from_name(const std::string& name);  // throws ladder::Error for an unknown name

// How a parameter starts. Normal parameters get a standard deviation from optim/ (by role and
// fan-in).
// Given: a fixed logical value the model's definition prescribes (a Mamba-2 layer's A spectrum
// and dt bias), not a choice of scale; every layout takes its block of it.
enum class InitKind { Normal, Ones, Zeros, Given };

// How a parameter is split across the tensor-parallel group: this rank holds block `rank` of `size`
// equal blocks along dimension `dim` of the logical shape. dim < 0 (the default): every rank holds
// all of it. With `pad`, the dimension need not divide: blocks hold ceil(n / size) rows and the
// last ones end in zero rows beyond the logical tensor (the vocabulary padded to a multiple of tp);
// the padding is a layout artefact, never part of the logical tensor that checkpoints hold.
struct Shard {
  int dim = -1;
  int rank = 0;
  int size = 1;
  bool pad = false;
  bool split() const { return dim >= 0 && size > 1; }
};

struct Param {
  std::string name;  // canonical, e.g. "layers.3.attn.wq"
  Role role = Role::Hidden;
  InitKind init = InitKind::Normal;
  std::vector<int64_t> shape;   // full logical shape
  std::vector<int> width_dims;  // dimensions that scale with d_model
  int64_t fan_in = 1;           // inputs per output unit, for fan-in-scaled init
  double init_multiplier =
      1.0;              // extra factor on the init std (e.g. depth-scaled output projections)
  torch::Tensor value;  // this rank's block (the full tensor when not split), requires_grad
  Shard shard;          // which block of the logical tensor `value` is (tensor parallelism)
  // Expert parallelism: a stack of experts [experts, ...] split along dim 0 over the ep ranks
  // (parallel/expert_parallel.h), before the tensor-parallel split of another dimension.
  Shard experts;
  // A copy of a parameter whose owner is another pipeline stage: the tied embedding on the last
  // stage, used as its readout. Its gradient is summed with the owner's so both stay identical; it
  // is never written to checkpoints nor counted twice in norms.
  bool tied_copy = false;
  // False for a tensor a rule of the model sets between steps (DeepSeek-V3's balancing bias of a
  // router): it takes no gradient, and optim/ gives it no learning rate and no weight decay.
  bool trained = true;
  torch::Tensor given;  // InitKind::Given: the full logical value
};

// This rank's block of a tensor at the parameter's logical shape (the tensor itself when not
// split): its experts, then its tensor-parallel block, zero-padded where that reaches beyond it.
torch::Tensor local_block(const Param& param, const torch::Tensor& full);
// The first index along the tensor-parallel split dimension of this rank's block, and the block's
// length there.
int64_t block_start(const Param& param);
int64_t block_length(const Param& param);

// Which parameters of the model this rank holds. A pipeline stage holds its own layers only, but
// every rank knows the whole model's parameters (names, shapes, roles): checkpoints create every
// logical tensor, and the size accounting counts them all.
enum class Holding {
  Held,       // this rank trains it
  Elsewhere,  // another pipeline stage does: only its description is kept
  TiedCopy,   // another stage owns it and this one keeps an identical copy (Param::tied_copy)
};

class ParamStore {
 public:
  // Registers a parameter of logical shape `shape`, allocated (uninitialised) at this rank's block
  // of it; returns a handle to its value (undefined when held elsewhere). The split dimension must
  // divide evenly.
  torch::Tensor add(const std::string& name, Role role, InitKind init, std::vector<int64_t> shape,
                    std::vector<int> width_dims, int64_t fan_in, double init_multiplier = 1.0,
                    Shard shard = {}, Holding holding = Holding::Held, Shard experts = {});

  // Marks a registered parameter as set by a rule of the model, not by the optimizer
  // (Param::trained); its value takes no gradient.
  void set_rule_updated(const std::string& name);
  // Makes a registered parameter start from `full` (its logical value; InitKind::Given).
  void set_given(const std::string& name, const torch::Tensor& full);

  // The parameters this rank holds, in registration order.
  std::vector<Param>& all() { return params_; }
  const std::vector<Param>& all() const { return params_; }
  // Every parameter of the model, held here or not, in registration order (values undefined for
  // those held elsewhere; one entry for a tied copy).
  const std::vector<Param>& catalog() const { return catalog_; }
  const Param& get(const std::string& name) const;
  // Elements at the logical shapes of the whole model (however it is split or staged).
  int64_t numel() const;
  int64_t numel(Role role) const;

 private:
  std::vector<Param> params_, catalog_;
};

}  // namespace ladder::models
