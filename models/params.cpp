#include "models/params.h"

#include <algorithm>

#include "core/error.h"

namespace ladder::models {

const char* role_name(Role role) {
  switch (role) {
    case Role::Embedding:
      return "embedding";
    case Role::Hidden:
      return "hidden";
    case Role::Readout:
      return "readout";
    case Role::Vector:
      return "vector";
  }
  return "?";
}

Role role_from_name(const std::string& name) {
  for (Role r : {Role::Embedding, Role::Hidden, Role::Readout, Role::Vector})
    if (name == role_name(r)) return r;
  throw Error("role", "unknown parameter role \"" + name + "\"");
}

namespace {

int64_t logical_numel(const Param& p) {
  int64_t n = 1;
  for (int64_t d : p.shape)
    n *= d;
  return n;
}

}  // namespace

int64_t block_length(const Param& param) {
  if (!param.shard.split()) return param.shape.empty() ? 1 : param.shape[0];
  const int64_t n = param.shape[param.shard.dim], k = param.shard.size;
  return (n + k - 1) / k;
}

int64_t block_start(const Param& param) {
  return param.shard.split() ? param.shard.rank * block_length(param) : 0;
}

torch::Tensor local_block(const Param& param, const torch::Tensor& whole) {
  torch::Tensor full = whole;
  if (param.experts.split()) {
    const int64_t per_rank = param.shape[0] / param.experts.size;
    full = full.narrow(0, param.experts.rank * per_rank, per_rank);
  }
  if (!param.shard.split()) return full;
  const int dim = param.shard.dim;
  const int64_t n = param.shape[dim], start = block_start(param), length = block_length(param);
  const int64_t present = std::max<int64_t>(0, std::min(length, n - start));
  torch::Tensor block = full.narrow(dim, std::min(start, n), present);
  if (present == length) return block;
  std::vector<int64_t> padding = full.sizes().vec();
  padding[dim] = length - present;
  return torch::cat({block, torch::zeros(padding, full.options())}, dim);
}

torch::Tensor ParamStore::add(const std::string& name, Role role, InitKind init,
                              std::vector<int64_t> shape, std::vector<int> width_dims,
                              int64_t fan_in, double init_multiplier, Shard shard, Holding holding,
                              Shard experts) {
  for (const auto& p : catalog_)
    if (p.name == name) throw std::logic_error("parameter registered twice: " + name);
  std::vector<int64_t> local = shape;
  Param p;
  p.name = name, p.role = role, p.init = init, p.shape = shape,
  p.width_dims = std::move(width_dims);
  p.fan_in = fan_in, p.init_multiplier = init_multiplier, p.shard = shard;
  if (shard.split()) {
    if (shard.dim >= static_cast<int>(shape.size()) ||
        (!shard.pad && shape[shard.dim] % shard.size != 0) || shard.rank < 0 ||
        shard.rank >= shard.size)
      throw std::logic_error("parameter " + name + ": dimension " + std::to_string(shard.dim) +
                             " cannot be split into " + std::to_string(shard.size) + " blocks");
    local[shard.dim] = block_length(p);
  }
  if (experts.split()) {
    if (experts.dim != 0 || shard.dim == 0 || shape.empty() || shape[0] % experts.size != 0)
      throw std::logic_error("parameter " + name + ": " + std::to_string(shape[0]) +
                             " experts cannot be split into " + std::to_string(experts.size) +
                             " blocks along dimension 0");
    p.experts = experts;
    local[0] = shape[0] / experts.size;
  }
  catalog_.push_back(p);
  if (holding == Holding::Elsewhere) return {};
  p.value = torch::empty(local, torch::kFloat32).set_requires_grad(true);
  p.tied_copy = holding == Holding::TiedCopy;
  params_.push_back(std::move(p));
  return params_.back().value;
}

void ParamStore::set_rule_updated(const std::string& name) {
  for (auto* list : {&params_, &catalog_})
    for (auto& p : *list)
      if (p.name == name) {
        p.trained = false;
        if (p.value.defined()) p.value.set_requires_grad(false);
      }
}

void ParamStore::set_given(const std::string& name, const torch::Tensor& full) {
  for (auto* list : {&params_, &catalog_})
    for (auto& p : *list)
      if (p.name == name) {
        if (full.sizes().vec() != p.shape)
          throw std::logic_error("parameter " + name + ": the given value has the wrong shape");
        p.init = InitKind::Given;
        p.given = full.to(torch::kFloat32);
      }
}

const Param& ParamStore::get(const std::string& name) const {
  for (const auto& p : params_)
    if (p.name == name) return p;
  throw std::out_of_range("no parameter " + name);
}

int64_t ParamStore::numel() const {
  int64_t n = 0;
  for (const auto& p : catalog_)
    n += logical_numel(p);
  return n;
}

int64_t ParamStore::numel(Role role) const {
  int64_t n = 0;
  for (const auto& p : catalog_)
    if (p.role == role) n += logical_numel(p);
  return n;
}

}  // namespace ladder::models
