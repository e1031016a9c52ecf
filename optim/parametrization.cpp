#include "optim/parametrization.h"

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>

#include "core/error.h"
#include "core/hash.h"

namespace ladder::optim {

using models::InitKind;
using models::Role;

void check_parametrization(const MupConfig& mup) {
  if (mup.parametrization != "sp")
    throw Error("mup.parametrization",
                "\"" + mup.parametrization + "\" is not built yet; use \"sp\" (standard)");
}

void initialize(models::ParamStore& store, const MupConfig& mup, uint64_t seed) {
  check_parametrization(mup);
  torch::NoGradGuard no_grad;
  for (auto& p : store.all()) {
    switch (p.init) {
      case InitKind::Ones:
        p.value.fill_(1.0);
        continue;
      case InitKind::Zeros:
        p.value.zero_();
        continue;
      case InitKind::Normal:
        break;
    }
    const double base = p.role == Role::Embedding ? 1.0 : 1.0 / std::sqrt(double(p.fan_in));
    auto generator = at::detail::createCPUGenerator(hash_words(seed, fnv1a64(p.name)));
    // Drawn at the full logical shape, of which a tensor-parallel rank keeps its block: every
    // layout starts from the weights of a single process (DESIGN contract 3).
    torch::Tensor full = torch::empty(p.shape, torch::kFloat32);
    full.normal_(0.0, base * p.init_multiplier, generator);
    p.value.copy_(models::local_block(p, full));
  }
}

std::vector<ParamSettings> param_settings(const models::ParamStore& store, const OptimConfig& optim,
                                          const MupConfig& mup) {
  check_parametrization(mup);
  std::vector<ParamSettings> out;
  for (const auto& p : store.all()) {
    ParamSettings s;
    s.weight_decay = p.role == Role::Vector ? 0.0 : optim.weight_decay;
    out.push_back(s);
  }
  return out;
}

}  // namespace ladder::optim
