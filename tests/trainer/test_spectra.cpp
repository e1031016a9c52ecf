#include <gtest/gtest.h>

#include "trainer/run/spectra.h"

namespace ladder {
namespace {

// A matrix with the given singular values: U diag(s) V^T with random orthonormal U and V.
torch::Tensor with_singular_values(int64_t rows, int64_t columns, const torch::Tensor& s) {
  const auto [u, ru] = torch::linalg_qr(torch::randn({rows, s.size(0)}, torch::kFloat64));
  const auto [v, rv] = torch::linalg_qr(torch::randn({columns, s.size(0)}, torch::kFloat64));
  return torch::mm(u * s, v.t()).to(torch::kFloat32);
}

TEST(Spectra, PowerIterationFindsTheTopSingularValue) {
  torch::manual_seed(11);
  for (const auto& [rows, columns] : {std::pair{48, 32}, std::pair{32, 96}, std::pair{1, 7}}) {
    // A top value apart from the rest, as trained matrices have (Marchenko-Pastur bulk below).
    const int64_t k = std::min(rows, columns);
    const torch::Tensor s = torch::cat(
        {torch::tensor({3.0}, torch::kFloat64), torch::linspace(2.0, 0.5, k - 1, torch::kFloat64)});
    models::ParamStore store;
    torch::Tensor w = store.add("w", models::Role::Hidden, models::InitKind::Normal,
                                {rows, columns}, {0, 1}, columns);
    {
      torch::NoGradGuard no_grad;
      w.copy_(with_singular_values(rows, columns, s));
    }
    EXPECT_NEAR(top_singular_value(store.get("w"), nullptr), 3.0, 3e-4) << rows << "x" << columns;
    // Against LibTorch's SVD of the same fp32 matrix.
    EXPECT_NEAR(top_singular_value(store.get("w"), nullptr),
                torch::linalg_svdvals(w.detach())[0].item<double>(), 3e-4);
  }
  models::ParamStore zeros;
  zeros.add("z", models::Role::Hidden, models::InitKind::Zeros, {4, 4}, {0, 1}, 4).detach().zero_();
  EXPECT_EQ(top_singular_value(zeros.get("z"), nullptr), 0.0);
}

TEST(Spectra, NamesTheHiddenMatricesOnly) {
  models::ParamStore store;
  store.add("embedding", models::Role::Embedding, models::InitKind::Normal, {5, 4}, {1}, 1);
  store.add("a", models::Role::Hidden, models::InitKind::Normal, {4, 4}, {0, 1}, 4);
  store.add("norm", models::Role::Vector, models::InitKind::Ones, {4}, {0}, 1);
  store.add("b", models::Role::Hidden, models::InitKind::Normal, {8, 4}, {0, 1}, 4);
  EXPECT_EQ(spectra_names(store), (std::vector<std::string>{"a", "b"}));
}

}  // namespace
}  // namespace ladder
