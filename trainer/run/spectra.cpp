#include "trainer/run/spectra.h"

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>

namespace ladder {

double top_singular_value(const models::Param& param, const parallel::Communicator* tp,
                          int max_iterations) {
  torch::NoGradGuard no_grad;
  const torch::Tensor w = param.value.detach().to(torch::kFloat32).flatten(1);
  const bool rows_split = param.shard.split() && param.shard.dim == 0 && tp;
  const bool columns_split = param.shard.split() && param.shard.dim == 1 && tp;
  auto sum_over_tp = [&](torch::Tensor t) {
    tp->all_reduce(t);
    return t;
  };
  // The same start on every rank and at every call: a fixed-seed Gaussian over the logical columns,
  // of which a column-split rank takes its block.
  auto generator = at::detail::createCPUGenerator(0x5bec7);
  const int64_t columns =
      param.shard.split() && param.shard.dim == 1 ? param.shape.at(1) : w.size(1);
  torch::Tensor v = torch::empty({columns}, torch::kFloat32).normal_(0, 1, generator);
  if (columns_split) v = v.narrow(0, models::block_start(param), w.size(1)).clone();
  v = v.to(w.device());
  auto norm = [&](const torch::Tensor& x, bool split) {
    torch::Tensor square = x.square().sum().to(torch::kFloat64).reshape({1});
    if (split) square = sum_over_tp(square);
    return std::sqrt(square.item<double>());
  };
  v /= norm(v, columns_split);
  double sigma = 0;
  for (int k = 0; k < max_iterations; ++k) {
    torch::Tensor u = torch::mv(w, v);  // rows split: this rank's rows of W v
    if (columns_split) u = sum_over_tp(u);
    u /= std::max(norm(u, rows_split), 1e-30);
    torch::Tensor z = torch::mv(w.t(), u);
    if (rows_split) z = sum_over_tp(z);
    const double previous = sigma;
    sigma = norm(z, columns_split);
    if (sigma == 0) break;  // a zero matrix
    v = z / sigma;
    // The same decision on every rank: sigma is the same number there.
    if (std::abs(sigma - previous) <= 1e-5 * sigma) break;
  }
  return sigma;
}

std::vector<std::string> spectra_names(const models::ParamStore& params) {
  std::vector<std::string> names;
  for (const auto& p : params.catalog())
    if (p.role == models::Role::Hidden && p.shape.size() == 2) names.push_back(p.name);
  return names;
}

std::vector<double> top_singular_values(const models::ParamStore& params,
                                        const parallel::Communicator& tp,
                                        const parallel::Communicator& world, bool contributes) {
  const std::vector<std::string> names = spectra_names(params);
  torch::Tensor values = torch::zeros({static_cast<int64_t>(names.size())}, torch::kFloat64);
  size_t k = 0;
  for (const auto& name : names) {
    // Held parameters come in catalog order: a pipeline stage holds some of them.
    for (const auto& p : params.all())
      if (p.name == name) {
        const double sigma = top_singular_value(p, &tp);
        if (contributes) values[static_cast<int64_t>(k)] = sigma;
        break;
      }
    ++k;
  }
  world.all_reduce(values);
  return std::vector<double>(values.data_ptr<double>(), values.data_ptr<double>() + values.numel());
}

}  // namespace ladder
