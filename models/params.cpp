#include "models/params.h"

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

torch::Tensor ParamStore::add(const std::string& name, Role role, InitKind init,
                              std::vector<int64_t> shape, std::vector<int> width_dims,
                              int64_t fan_in, double init_multiplier) {
  for (const auto& p : params_)
    if (p.name == name) throw std::logic_error("parameter registered twice: " + name);
  Param p{name, role, init, shape, std::move(width_dims), fan_in, init_multiplier, {}};
  p.value = torch::empty(shape, torch::kFloat32).set_requires_grad(true);
  params_.push_back(std::move(p));
  return params_.back().value;
}

const Param& ParamStore::get(const std::string& name) const {
  for (const auto& p : params_)
    if (p.name == name) return p;
  throw std::out_of_range("no parameter " + name);
}

int64_t ParamStore::numel() const {
  int64_t n = 0;
  for (const auto& p : params_)
    n += p.value.numel();
  return n;
}

int64_t ParamStore::numel(Role role) const {
  int64_t n = 0;
  for (const auto& p : params_)
    if (p.role == role) n += p.value.numel();
  return n;
}

}  // namespace ladder::models
