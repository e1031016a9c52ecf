// DiLoCo's pseudo-gradient encodings (parallel/diloco.h): sizes, and every decoded value within the
// quantiser's bound of the original, on sizes that are not multiples of the block, one value, an
// all-zero block and a block with an outlier. (The outer loop itself is tested against a reference
// under mpirun in tests/trainer/test_diloco_training.cpp.)
#include <gtest/gtest.h>

#include "parallel/diloco.h"

namespace ladder::parallel {
namespace {

torch::Tensor round_trip(const torch::Tensor& x, PseudoGradDtype dtype) {
  torch::Tensor bytes = torch::empty({encoded_bytes(dtype, x.numel())}, torch::kUInt8);
  encode_pseudo_grad(x, dtype, bytes);
  return decode_pseudo_grad(bytes, dtype, x.numel());
}

// Values with the shapes that break quantisers: a tail block, zeros, an outlier, tiny values.
torch::Tensor awkward_values(int64_t n) {
  torch::manual_seed(7);
  torch::Tensor x = torch::randn({n}) * 1e-3;
  if (n > 2 * kQuantBlock) {
    x.narrow(0, kQuantBlock, kQuantBlock).zero_();  // an all-zero block
    x[2 * kQuantBlock + 3] = 0.5;                   // an outlier in the third block
  }
  return x;
}

TEST(PseudoGradEncoding, SizesCountScalesAndPackedCodes) {
  EXPECT_EQ(encoded_bytes(PseudoGradDtype::Fp32, 300), 1200);
  EXPECT_EQ(encoded_bytes(PseudoGradDtype::Bf16, 300), 600);
  EXPECT_EQ(encoded_bytes(PseudoGradDtype::Int8, 300), 3 * 4 + 300);  // 3 blocks of 128
  EXPECT_EQ(encoded_bytes(PseudoGradDtype::Int4, 300), 3 * 4 + 150);
  EXPECT_EQ(encoded_bytes(PseudoGradDtype::Int4, 1), 4 + 1);
  EXPECT_EQ(choice_value(kPseudoGradDtypeNames, "int4"), PseudoGradDtype::Int4);
  EXPECT_THROW(choice_value(kPseudoGradDtypeNames, "int2"), std::invalid_argument);
}

TEST(PseudoGradEncoding, IntegerCodesStayWithinHalfAStepOfTheirBlockScale) {
  for (const auto dtype : {PseudoGradDtype::Int8, PseudoGradDtype::Int4}) {
    const double qmax = dtype == PseudoGradDtype::Int8 ? 127 : 7;
    for (int64_t n : {1, 5, 127, 300, 1000}) {
      const torch::Tensor x = awkward_values(n);
      const torch::Tensor y = round_trip(x, dtype);
      ASSERT_EQ(y.numel(), n);
      for (int64_t b = 0; b * kQuantBlock < n; ++b) {
        const int64_t len = std::min(kQuantBlock, n - b * kQuantBlock);
        const torch::Tensor xb = x.narrow(0, b * kQuantBlock, len);
        const torch::Tensor yb = y.narrow(0, b * kQuantBlock, len);
        const double scale = xb.abs().max().item<double>() / qmax;
        const double error = (xb - yb).abs().max().item<double>();
        EXPECT_LE(error, 0.5 * scale * (1 + 1e-5) + 1e-12)
            << choice_name(kPseudoGradDtypeNames, dtype) << " n " << n << " block " << b;
        if (scale == 0) EXPECT_TRUE(yb.eq(0).all().item<bool>());  // zeros stay exact
      }
      // The block's largest magnitude is a code of its own: it comes back (to fp32 rounding).
      const int64_t top = x.abs().argmax().item<int64_t>();
      EXPECT_NEAR(y[top].item<double>(), x[top].item<double>(),
                  1e-6 * std::abs(x[top].item<double>()));
    }
  }
}

TEST(PseudoGradEncoding, Bf16RoundsEachValueToNearestAndFp32IsExact) {
  const torch::Tensor x = awkward_values(1000);
  const torch::Tensor bf16 = round_trip(x, PseudoGradDtype::Bf16);
  // bf16 keeps 8 significant bits: rounding to nearest errs by at most half a unit of the last
  // place, 2^-8 of the value.
  EXPECT_TRUE(((x - bf16).abs() <= x.abs() * std::ldexp(1.0, -8)).all().item<bool>());
  EXPECT_TRUE(bf16.equal(x.to(torch::kBFloat16).to(torch::kFloat32)));
  EXPECT_TRUE(round_trip(x, PseudoGradDtype::Fp32).equal(x));
}

TEST(PseudoGradEncoding, Int4PacksTwoCodesPerByteInOrder) {
  // Exact multiples of the scale (absmax 7 -> scale 1) come back exactly, in order, odd length.
  const torch::Tensor x = torch::tensor({-7.f, 3.f, 0.f, 7.f, -1.f});
  EXPECT_TRUE(round_trip(x, PseudoGradDtype::Int4).equal(x));
  const torch::Tensor y = torch::tensor({-127.f, 5.f, 0.f, 127.f});
  EXPECT_TRUE(round_trip(y, PseudoGradDtype::Int8).equal(y));
}

}  // namespace
}  // namespace ladder::parallel
