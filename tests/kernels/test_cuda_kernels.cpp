// The fused CUDA kernels (kernels/cuda.h) against their composites, on a GPU: forward and every
// gradient, fp32 and bf16, row sizes that no block size divides, non-contiguous inputs. Without a
// GPU (or in a build without nvcc) every test skips with the reason; bench/gpu_check.sh runs them
// first on a lent GPU machine.
#include <gtest/gtest.h>

#include "kernels/cross_entropy.h"
#include "kernels/cuda.h"
#include "kernels/rms_norm.h"
#include "kernels/rotary.h"
#include "kernels/swiglu.h"
#include "models/precision.h"

namespace ladder::kernels {
namespace {

class CudaKernels : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!cuda_kernels_built()) GTEST_SKIP() << "this build has no CUDA kernels (no nvcc)";
    if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device visible";
    set_cuda_kernels(true);
    torch::manual_seed(3);
  }
  void TearDown() override {
    if (cuda_kernels_built()) set_cuda_kernels(false);
  }
  static torch::Tensor random(std::vector<int64_t> shape, torch::Dtype type) {
    return torch::randn(shape, torch::TensorOptions(torch::kCUDA).dtype(type));
  }
  // |a - b| <= tol (1 + |b|) elementwise, with the worst element named.
  static void expect_close(const torch::Tensor& a, const torch::Tensor& b, double tol,
                           const std::string& what) {
    ASSERT_EQ(a.sizes(), b.sizes()) << what;
    const torch::Tensor x = a.to(torch::kFloat64).cpu(), y = b.to(torch::kFloat64).cpu();
    const double worst = ((x - y).abs() / (1 + y.abs())).max().item<double>();
    EXPECT_LE(worst, tol) << what << ": worst relative difference " << worst;
  }
};

TEST_F(CudaKernels, AddRmsNormMatchesTheComposite) {
  for (const int64_t n : {1000, 129, 4096}) {
    for (const auto branch_type : {torch::kFloat32, torch::kBFloat16}) {
      for (const bool bf16_normed : {false, true}) {
        const double tol = (branch_type == torch::kBFloat16 || bf16_normed) ? 2e-2 : 2e-5;
        const std::string what = "n " + std::to_string(n) + (bf16_normed ? " bf16 normed" : "") +
                                 (branch_type == torch::kBFloat16 ? " bf16 branch" : "");
        // A non-contiguous residual (every other row of a wider tensor).
        const torch::Tensor wide = random({2 * 37, n}, torch::kFloat32);
        auto residual = wide.slice(0, 0, 2 * 37, 2).detach().requires_grad_(true);
        auto branch = random({37, n}, branch_type).requires_grad_(true);
        auto gain = (1 + 0.1 * random({n}, torch::kFloat32)).requires_grad_(true);
        const auto fused = add_rms_norm(residual, branch, 0.7, gain, 1e-5, true, bf16_normed);
        const torch::Tensor d_normed = random({37, n}, torch::kFloat32);
        const torch::Tensor d_sum = random({37, n}, torch::kFloat32);
        const auto loss = [&](const AddNormOutput& o) {
          return (o.normed.to(torch::kFloat32) * d_normed).sum() + (o.sum * d_sum).sum();
        };
        const auto g = torch::autograd::grad({loss(fused)}, {residual, branch, gain});
        set_cuda_kernels(false);
        AddNormOutput ref = add_rms_norm_reference(residual, branch, 0.7, gain, 1e-5);
        if (bf16_normed) ref.normed = ref.normed.to(torch::kBFloat16);
        const auto r = torch::autograd::grad({loss(ref)}, {residual, branch, gain});
        set_cuda_kernels(true);
        EXPECT_EQ(fused.normed.scalar_type(), bf16_normed ? torch::kBFloat16 : torch::kFloat32);
        EXPECT_EQ(fused.sum.scalar_type(), torch::kFloat32);
        // The composite rounds scale x branch to bf16 before the add; the kernel adds in fp32.
        expect_close(fused.sum, ref.sum, branch_type == torch::kBFloat16 ? 1e-2 : 1e-6,
                     what + " sum");
        expect_close(fused.normed, ref.normed, tol, what + " normed");
        expect_close(g[0], r[0], tol, what + " d residual");
        expect_close(g[1], r[1], tol, what + " d branch");
        expect_close(g[2], r[2], bf16_normed ? 5e-2 : 1e-4, what + " d gain");
        EXPECT_EQ(g[1].scalar_type(), branch_type);
      }
    }
  }
}

TEST_F(CudaKernels, RmsNormAloneMatchesTheComposite) {
  auto x = random({5, 3, 771}, torch::kFloat32).requires_grad_(true);
  auto gain = (1 + 0.1 * random({771}, torch::kFloat32)).requires_grad_(true);
  const torch::Tensor d = random({5, 3, 771}, torch::kFloat32);
  const torch::Tensor fused = rms_norm(x, gain, 1e-6, true);
  const auto g = torch::autograd::grad({(fused * d).sum()}, {x, gain});
  const torch::Tensor ref = rms_norm_reference(x, gain, 1e-6);
  const auto r = torch::autograd::grad({(ref * d).sum()}, {x, gain});
  expect_close(fused, ref, 2e-6, "normed");
  expect_close(g[0], r[0], 2e-5, "d x");
  expect_close(g[1], r[1], 1e-4, "d gain");
}

TEST_F(CudaKernels, SwigluMatchesTheComposite) {
  for (const auto type : {torch::kFloat32, torch::kBFloat16}) {
    const double tol = type == torch::kBFloat16 ? 2e-2 : 1e-5;
    // Non-contiguous gate and up: the two halves of one projection, as a fused gate-up would give.
    const torch::Tensor both = random({13, 2 * 1001}, type);
    auto gate = both.slice(1, 0, 1001).detach().requires_grad_(true);
    auto up = both.slice(1, 1001).detach().requires_grad_(true);
    const torch::Tensor d = random({13, 1001}, type);
    const torch::Tensor fused = swiglu(gate, up, true);
    const auto g = torch::autograd::grad({(fused.to(torch::kFloat32) * d).sum()}, {gate, up});
    const torch::Tensor ref = swiglu_reference(gate, up);
    const auto r = torch::autograd::grad({(ref.to(torch::kFloat32) * d).sum()}, {gate, up});
    EXPECT_EQ(fused.scalar_type(), type);
    expect_close(fused, ref, tol, "out");
    expect_close(g[0], r[0], tol, "d gate");
    expect_close(g[1], r[1], tol, "d up");
  }
}

TEST_F(CudaKernels, RotaryQkMatchesTheComposite) {
  // q from a [batch, heads, seq, head_dim] tensor transposed (not contiguous), k with fewer heads,
  // tables longer than the sequence.
  const int64_t batch = 2, seq = 37, heads = 3, kv_heads = 1, head_dim = 64, half = 32;
  const torch::Tensor angles =
      torch::outer(torch::arange(50, torch::kFloat64),
                   torch::pow(10000.0, -2.0 * torch::arange(half, torch::kFloat64) / head_dim))
          .to(torch::kCUDA);
  const torch::Tensor cos = angles.cos().to(torch::kFloat32),
                      sin = angles.sin().to(torch::kFloat32);
  for (const auto type : {torch::kFloat32, torch::kBFloat16}) {
    const double tol = type == torch::kBFloat16 ? 2e-2 : 1e-6;
    auto q =
        random({batch, heads, seq, head_dim}, type).transpose(1, 2).detach().requires_grad_(true);
    auto k = random({batch, seq, kv_heads, head_dim}, type).requires_grad_(true);
    const torch::Tensor dq = random({batch, seq, heads, head_dim}, torch::kFloat32);
    const torch::Tensor dk = random({batch, seq, kv_heads, head_dim}, torch::kFloat32);
    const auto fused = cuda_rotary_qk(q, k, cos, sin);
    ASSERT_TRUE(fused.has_value());
    const auto loss = [&](const torch::Tensor& a, const torch::Tensor& b) {
      return (a.to(torch::kFloat32) * dq).sum() + (b.to(torch::kFloat32) * dk).sum();
    };
    const auto g = torch::autograd::grad({loss(fused->first, fused->second)}, {q, k});
    const torch::Tensor c = cos.to(type), s = sin.to(type);
    const torch::Tensor rq = rotary_reference(q, c, s), rk = rotary_reference(k, c, s);
    const auto r = torch::autograd::grad({loss(rq, rk)}, {q, k});
    EXPECT_EQ(fused->first.scalar_type(), type);
    expect_close(fused->first, rq, tol, "q");
    expect_close(fused->second, rk, tol, "k");
    expect_close(g[0], r[0], tol, "d q");
    expect_close(g[1], r[1], tol, "d k");
  }
}

TEST_F(CudaKernels, ReadoutCrossEntropyMatchesTheComposite) {
  // fp32, then bf16 logits under autocast (no fp32 logits); an odd vocabulary; a muP logit scale;
  // the z-loss's gradient through lse.
  for (const bool autocast : {false, true}) {
    const int64_t tokens = 67, d = 96, vocab = 5003;
    auto hidden = random({tokens, d}, torch::kFloat32).requires_grad_(true);
    auto weight = (0.05 * random({vocab, d}, torch::kFloat32)).requires_grad_(true);
    const torch::Tensor targets =
        torch::randint(vocab, {tokens}, torch::TensorOptions(torch::kCUDA).dtype(torch::kLong));
    const auto objective = [&](const ReadoutLoss& o) {
      return o.loss.mean() + 1e-2 * o.lse.square().mean();
    };
    auto run = [&](bool fused) {
      set_cuda_kernels(fused);
      ReadoutLoss o;
      {
        const models::WeightCastCache casts;
        const models::Autocast scope(hidden.device(), autocast);
        o = fused ? readout_cross_entropy(hidden, weight, targets, 0.5)
                  : readout_cross_entropy_reference(hidden, weight, targets, 0.5);
      }
      auto g = torch::autograd::grad({objective(o)}, {hidden, weight});
      return std::make_tuple(o.loss.detach(), o.lse.detach(), g[0], g[1]);
    };
    ASSERT_TRUE(readout_cross_entropy_fusable(hidden, weight, targets));
    const auto [loss, lse, dh, dw] = run(true);
    const auto [rloss, rlse, rdh, rdw] = run(false);
    set_cuda_kernels(true);
    const double tol = autocast ? 2e-2 : 2e-5;
    const std::string what = autocast ? "bf16" : "fp32";
    EXPECT_EQ(loss.scalar_type(), torch::kFloat32);
    expect_close(loss, rloss, tol, what + " loss");
    expect_close(lse, rlse, tol, what + " lse");
    expect_close(dh, rdh, tol, what + " d hidden");
    expect_close(dw, rdw, tol, what + " d weight");
  }
}

TEST_F(CudaKernels, ATargetOutsideTheVocabularyGivesANaNLoss) {
  const torch::Tensor hidden = random({4, 8}, torch::kFloat32),
                      weight = random({11, 8}, torch::kFloat32);
  const torch::Tensor targets =
      torch::tensor({0, 3, 11, 10}, torch::TensorOptions(torch::kCUDA).dtype(torch::kLong));
  const torch::Tensor loss = readout_cross_entropy(hidden, weight, targets, 1.0).loss.cpu();
  EXPECT_TRUE(std::isfinite(loss[1].item<float>()));
  EXPECT_TRUE(std::isnan(loss[2].item<float>()));
}

}  // namespace
}  // namespace ladder::kernels
