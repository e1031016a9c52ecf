#include "optim/parametrization.h"

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <sstream>

#include "core/format.h"
#include "core/hash.h"

namespace ladder::optim {

using models::InitKind;
using models::Role;

RuleInputs rule_inputs(const MupConfig& mup, const OptimConfig& optim,
                       const models::ModelConfig& model, int64_t tokens_per_step,
                       int64_t total_tokens) {
  RuleInputs in;
  in.mup = mup;
  in.optim = optim;
  in.width_multiplier = static_cast<double>(model.d_model) / static_cast<double>(mup.base_width);
  in.depth_multiplier =
      mup.base_depth > 0 ? static_cast<double>(model.n_layers) / static_cast<double>(mup.base_depth)
                         : 1.0;
  in.tokens_per_step = static_cast<double>(tokens_per_step);
  in.total_tokens = static_cast<double>(total_tokens);
  return in;
}

models::ScaleFactors scale_factors(const MupConfig& mup, const models::ModelConfig& model) {
  models::ScaleFactors s;
  const bool mu = mup.parametrization == Parametrization::Mup;
  const double m = static_cast<double>(model.d_model) / static_cast<double>(mup.base_width);
  const double head_dim = static_cast<double>(model.d_model / model.n_heads);
  // muP: q.k sums head_dim coordinates that become correlated in training, so it grows like
  // head_dim, not sqrt(head_dim) (Yang et al. 2021, Tensor Programs V).
  if (mu)
    s.attention_scale = mup.attention_multiplier / head_dim;
  else if (mup.attention_multiplier != 1.0)
    s.attention_scale = mup.attention_multiplier / std::sqrt(head_dim);
  // muP's MuReadout: the logits are divided by the width multiplier.
  s.logits = mu ? mup.output_multiplier / m : mup.output_multiplier;
  if (mup.depth_alpha > 0) {
    const double m_l = static_cast<double>(model.n_layers) / static_cast<double>(mup.base_depth);
    s.residual_branch = std::pow(m_l, -mup.depth_alpha);
    s.residual_init_depth = mup.base_depth;
  }
  return s;
}

std::vector<ParamSettings> param_settings(const std::vector<models::Param>& params,
                                          const RuleInputs& in) {
  const bool mu = in.mup.parametrization == Parametrization::Mup;
  const double m = in.width_multiplier, alpha = in.mup.depth_alpha;
  // CompleteP (Dey et al. 2025, table 1): hidden lr x m_L^(alpha - 1), eps x m_L^-alpha.
  const double depth_lr = alpha > 0 ? std::pow(in.depth_multiplier, alpha - 1) : 1.0;
  const double depth_eps = alpha > 0 ? std::pow(in.depth_multiplier, -alpha) : 1.0;
  std::vector<ParamSettings> out;
  for (const auto& p : params) {
    ParamSettings s;
    s.eps = in.optim.eps;
    const double fan_in_std = 1.0 / std::sqrt(static_cast<double>(p.fan_in));
    switch (p.role) {
      case Role::Embedding:
        s.init_std = 1.0 * p.init_multiplier;
        s.weight_decay = in.optim.weight_decay;
        break;
      case Role::Readout:
        // muP (microsoft/mup MuReadout): the std stays that of the base width, sigma =
        // 1/sqrt(fan_in / m), and the output multiplier 1/m does the rest.
        s.init_std = !mu                        ? fan_in_std * p.init_multiplier
                     : in.mup.readout_zero_init ? 0.0
                                                : fan_in_std * p.init_multiplier * std::sqrt(m);
        s.weight_decay = in.optim.weight_decay;
        break;
      case Role::Hidden: {
        s.init_std = fan_in_std * p.init_multiplier;
        s.lr_multiplier = (mu ? 1.0 / m : 1.0) * depth_lr;
        s.eps = in.optim.eps * (mu ? 1.0 / m : 1.0) * depth_eps;
        const double lambda = in.optim.weight_decay;
        if (in.mup.wd_rule == WdRule::WidthPower)
          s.weight_decay = lambda * std::pow(m, in.mup.wd_width_exponent);
        else if (in.mup.wd_rule == WdRule::Timescale)
          // tau = B / (eta lambda D) (Bergsma et al. 2025, "Power Lines"), eta this matrix's
          // peak learning rate.
          s.weight_decay = in.tokens_per_step /
                           (in.optim.lr * s.lr_multiplier * in.mup.wd_timescale * in.total_tokens);
        else
          s.weight_decay = lambda;
        break;
      }
      case Role::Vector:
        s.init_std = fan_in_std * p.init_multiplier;
        break;
    }
    if (!p.trained) s.lr_multiplier = 0, s.weight_decay = 0;  // set by the model's own rule
    out.push_back(s);
  }
  return out;
}

void initialize(models::ParamStore& store, const std::vector<ParamSettings>& settings,
                uint64_t seed) {
  torch::NoGradGuard no_grad;
  auto& params = store.all();
  for (size_t i = 0; i < params.size(); ++i) {
    models::Param& p = params[i];
    const double std = settings.at(i).init_std;
    if (p.init == InitKind::Ones) {
      p.value.fill_(1.0);
    } else if (p.init == InitKind::Given) {
      p.value.copy_(models::local_block(p, p.given));
    } else if (p.init == InitKind::Zeros || std == 0) {
      p.value.zero_();
    } else {
      auto generator = at::detail::createCPUGenerator(hash_words(seed, fnv1a64(p.name)));
      // Drawn at the full logical shape, of which a tensor-parallel rank keeps its block: every
      // layout starts from the weights of a single process (DESIGN contract 3).
      torch::Tensor full = torch::empty(p.shape, torch::kFloat32);
      full.normal_(0.0, std, generator);
      p.value.copy_(models::local_block(p, full));
    }
  }
}

std::string rules_table(const std::vector<models::Param>& params,
                        const std::vector<ParamSettings>& settings, double width_multiplier) {
  auto shape_text = [](const std::vector<double>& dims) {
    std::string s = "[";
    for (size_t i = 0; i < dims.size(); ++i)
      s += (i ? ", " : "") + (dims[i] == std::floor(dims[i])
                                  ? std::to_string(static_cast<int64_t>(dims[i]))
                                  : shortest_float(dims[i]));
    return s + "]";
  };
  std::ostringstream out;
  out << "name\trole\tshape\tbase_shape\tinit_std\tlr_multiplier\tweight_decay\teps\n";
  for (size_t i = 0; i < params.size(); ++i) {
    const models::Param& p = params[i];
    std::vector<double> shape(p.shape.begin(), p.shape.end()), base = shape;
    for (int d : p.width_dims)
      base[static_cast<size_t>(d)] /= width_multiplier;
    const ParamSettings& s = settings.at(i);
    out << p.name << '\t' << models::role_name(p.role) << '\t' << shape_text(shape) << '\t'
        << shape_text(base) << '\t' << shortest_float(s.init_std) << '\t'
        << shortest_float(s.lr_multiplier) << '\t' << shortest_float(s.weight_decay) << '\t'
        << shortest_float(s.eps) << '\n';
  }
  return out.str();
}

Attributes parametrization_attributes(const RuleInputs& inputs, const std::string& rules) {
  const MupConfig& m = inputs.mup;
  return {{"lr", inputs.optim.lr},
          {"weight_decay", inputs.optim.weight_decay},
          {"parametrization", std::string(choice_name(kParametrizationNames, m.parametrization))},
          {"base_width", m.base_width},
          {"base_depth", m.base_depth},
          {"width_multiplier", inputs.width_multiplier},
          {"depth_multiplier", inputs.depth_multiplier},
          {"depth_alpha", m.depth_alpha},
          {"output_multiplier", m.output_multiplier},
          {"attention_multiplier", m.attention_multiplier},
          {"wd_rule", std::string(choice_name(kWdRuleNames, m.wd_rule))},
          {"rules", rules}};
}

}  // namespace ladder::optim
