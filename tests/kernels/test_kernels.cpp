// Every fused kernel against its LibTorch composite: forward values and every input's gradient,
// within 1e-6 in fp32 and within bf16 rounding in bf16, on odd shapes (sizes that are not multiples
// of the vector width, one-row inputs) and non-contiguous inputs; finite differences in fp64.
#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <vector>

#include "kernels/adamw.h"
#include "kernels/attention.h"
#include "kernels/cpu.h"
#include "kernels/cross_entropy.h"
#include "kernels/rms_norm.h"
#include "kernels/rotary.h"
#include "kernels/swiglu.h"
#include "models/finite_differences.h"
#include "models/precision.h"

namespace ladder::kernels {
namespace {

using Tensors = std::vector<torch::Tensor>;
using Fn = std::function<Tensors(const Tensors&)>;

// The largest difference relative to the reference's magnitude (at least 1).
double difference(const torch::Tensor& a, const torch::Tensor& b) {
  const torch::Tensor x = a.to(torch::kFloat64), y = b.to(torch::kFloat64);
  return (x - y).abs().max().item<double>() / std::max(1.0, y.abs().max().item<double>());
}

struct Result {
  Tensors outputs, grads;
};

// Calls f on the inputs as given (each a view of a leaf when `strided`: a slice of a wider tensor,
// so the kernel sees non-contiguous strides), back-propagates fixed random weights on each output,
// and returns the outputs and the leaves' gradients.
Result run(const Fn& f, const Tensors& values, bool strided, const Tensors& output_weights = {}) {
  Tensors leaves, inputs;
  for (const auto& v : values) {
    if (!v.is_floating_point()) {  // integer inputs (targets) pass as they are
      leaves.emplace_back();
      inputs.push_back(v);
      continue;
    }
    if (strided) {
      std::vector<int64_t> wide = v.sizes().vec();
      wide.back() += 3;
      torch::Tensor leaf = torch::zeros(wide, v.options());
      leaf.narrow(-1, 0, v.size(-1)).copy_(v);
      leaf.requires_grad_(true);
      leaves.push_back(leaf);
      inputs.push_back(leaf.narrow(-1, 0, v.size(-1)));
      // (A single row's slice is contiguous: its stride is never stepped.)
      if (v.numel() > v.size(-1)) EXPECT_FALSE(inputs.back().is_contiguous());
    } else {
      leaves.push_back(v.clone().requires_grad_(true));
      inputs.push_back(leaves.back());
    }
  }
  Result r;
  r.outputs = f(inputs);
  torch::Tensor objective = torch::zeros({}, torch::kFloat64);
  torch::manual_seed(123);
  for (size_t i = 0; i < r.outputs.size(); ++i) {
    const torch::Tensor w =
        i < output_weights.size() ? output_weights[i] : torch::randn(r.outputs[i].sizes());
    objective = objective + (r.outputs[i].to(torch::kFloat64) * w.to(torch::kFloat64)).sum();
  }
  objective.backward();
  for (size_t i = 0; i < leaves.size(); ++i) {
    if (!leaves[i].defined()) continue;
    torch::Tensor g = leaves[i].grad();
    if (strided) g = g.narrow(-1, 0, values[i].size(-1));
    r.grads.push_back(g);
  }
  return r;
}

// Runs the fused and the reference functions and compares outputs and gradients.
void expect_match(const Fn& fused, const Fn& reference, const Tensors& values, double tolerance,
                  bool strided, const std::string& what) {
  const Result a = run(fused, values, strided), b = run(reference, values, strided);
  ASSERT_EQ(a.outputs.size(), b.outputs.size());
  for (size_t i = 0; i < a.outputs.size(); ++i) {
    EXPECT_EQ(a.outputs[i].scalar_type(), b.outputs[i].scalar_type()) << what << " output " << i;
    EXPECT_EQ(a.outputs[i].sizes(), b.outputs[i].sizes()) << what << " output " << i;
    EXPECT_LE(difference(a.outputs[i], b.outputs[i]), tolerance) << what << " output " << i;
  }
  for (size_t i = 0; i < a.grads.size(); ++i) {
    ASSERT_TRUE(a.grads[i].defined() && b.grads[i].defined()) << what << " gradient " << i;
    EXPECT_LE(difference(a.grads[i], b.grads[i]), tolerance) << what << " gradient " << i;
  }
}

// The node that made `t`: proves a test compared the kernel, not the composite with itself.
std::string made_by(const torch::Tensor& t) {
  return t.grad_fn() ? t.grad_fn()->name() : "";
}

constexpr double kFp32 = 1e-6, kBf16 = 2e-2;

class Kernels : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!cpu_has_avx2()) GTEST_SKIP() << "this CPU has no AVX2: the kernels fall back";
    RecordProperty("isa", cpu_has_avx512() ? "avx512" : "avx2");
    torch::manual_seed(0);
  }
};

// RMSNorm with the residual add through the kernel (checked to be the kernel), and its composite;
// the plain RMSNorm alike. Inputs: {residual, branch, gain} and {x, gain}.
Tensors fused_add_rms_norm(const Tensors& in) {
  const auto out = add_rms_norm(in[0], in[1], 0.7, in[2], 1e-5, true);
  EXPECT_NE(made_by(out.normed).find("AddRmsNormFunction"), std::string::npos)
      << made_by(out.normed);
  return {out.sum, out.normed};
}
Tensors composite_add_rms_norm(const Tensors& in) {
  const auto out = add_rms_norm_reference(in[0], in[1], 0.7, in[2], 1e-5);
  return {out.sum, out.normed};
}
Tensors fused_rms_norm(const Tensors& in) {
  const torch::Tensor out = rms_norm(in[0], in[1], 1e-5, true);
  EXPECT_NE(made_by(out).find("RmsNormFunction"), std::string::npos);
  return {out};
}
Tensors composite_rms_norm(const Tensors& in) {
  return {rms_norm_reference(in[0], in[1], 1e-5)};
}

TEST_F(Kernels, AddRmsNormMatchesComposite) {
  for (const auto& shape : std::vector<std::vector<int64_t>>{{1, 37}, {5, 64}, {3, 7, 129}}) {
    const int64_t n = shape.back();
    for (const auto& [x_type, branch_type] : std::vector<std::pair<at::ScalarType, at::ScalarType>>{
             {torch::kFloat32, torch::kFloat32},
             {torch::kFloat32, torch::kBFloat16},
             {torch::kBFloat16, torch::kBFloat16}}) {
      const double tolerance =
          x_type == torch::kFloat32 && branch_type == torch::kFloat32 ? kFp32 : kBf16;
      const Tensors values = {torch::randn(shape).to(x_type), torch::randn(shape).to(branch_type),
                              1 + 0.3 * torch::randn({n})};
      for (const bool strided : {false, true}) {
        const std::string what = "add_rms_norm " + std::to_string(n) + " " + c10::toString(x_type) +
                                 "+" + c10::toString(branch_type) + (strided ? " strided" : "");
        expect_match(fused_add_rms_norm, composite_add_rms_norm, values, tolerance, strided, what);
        expect_match(fused_rms_norm, composite_rms_norm, Tensors{values[0], values[2]}, tolerance,
                     strided, "rms_norm " + what);
      }
    }
  }
}

TEST_F(Kernels, RmsNormWritesBf16ForBf16Products) {
  // An fp32 stream normed straight to bf16: the composite's result rounded to bf16, and gradients
  // (arriving in bf16) as the composite's.
  const Tensors values = {torch::randn({6, 45}), torch::randn({6, 45}),
                          1 + 0.3 * torch::randn({45})};
  expect_match(
      [](const Tensors& in) {
        const auto out = add_rms_norm(in[0], in[1], 0.7, in[2], 1e-5, true, true);
        EXPECT_EQ(out.normed.scalar_type(), torch::kBFloat16);
        EXPECT_EQ(out.sum.scalar_type(), torch::kFloat32);
        const torch::Tensor plain = rms_norm(in[0], in[2], 1e-5, true, true);
        EXPECT_EQ(plain.scalar_type(), torch::kBFloat16);
        return Tensors{out.sum, out.normed, plain};
      },
      [](const Tensors& in) {
        const auto out = add_rms_norm_reference(in[0], in[1], 0.7, in[2], 1e-5);
        return Tensors{out.sum, out.normed.to(torch::kBFloat16),
                       rms_norm_reference(in[0], in[2], 1e-5).to(torch::kBFloat16)};
      },
      values, kBf16, false, "bf16 normed");
}

TEST_F(Kernels, AddRmsNormFiniteDifferencesFp64) {
  const torch::Tensor x = models::leaf(torch::randn({3, 19})),
                      b = models::leaf(torch::randn({3, 19})),
                      g = models::leaf(1 + 0.3 * torch::randn({19}));
  models::expect_gradients_match(
      [&] {
        const auto out = add_rms_norm(x, b, 0.5, g, 1e-5, true);
        if (torch::GradMode::is_enabled())  // (the differences run without autograd)
          EXPECT_NE(made_by(out.normed).find("AddRmsNormFunction"), std::string::npos);
        return torch::cat({out.sum.reshape(-1), out.normed.reshape(-1)});
      },
      {x, b, g});
  models::expect_gradients_match([&] { return rms_norm(x, g, 1e-5, true); }, {x, g});
}

TEST_F(Kernels, RmsNormFallsBackWhereItDoesNotServe) {
  // Off, or a gain of another type than the rows' arithmetic: the composite, same values.
  const torch::Tensor x = torch::randn({4, 10}, torch::kFloat64).requires_grad_(true);
  const torch::Tensor g = torch::ones({10});
  EXPECT_EQ(made_by(rms_norm(x, g, 1e-5, true)).find("RmsNormFunction"), std::string::npos);
  EXPECT_EQ(made_by(rms_norm(x.to(torch::kFloat32), g, 1e-5, false)).find("RmsNormFunction"),
            std::string::npos);
}

// RoPE's cos and sin tables (fp32, [positions, head_dim / 2]) at base 10000.
std::pair<torch::Tensor, torch::Tensor> rotary_tables(int64_t positions, int64_t head_dim) {
  const torch::Tensor angles = torch::outer(
      torch::arange(positions, torch::kFloat64),
      torch::pow(10000.0, -2.0 * torch::arange(head_dim / 2, torch::kFloat64) / double(head_dim)));
  return {angles.cos().to(torch::kFloat32), angles.sin().to(torch::kFloat32)};
}

TEST_F(Kernels, RotaryMatchesComposite) {
  const int64_t positions = 40;
  for (const int64_t head_dim : {6, 34, 64}) {
    const auto tables = rotary_tables(positions, head_dim);
    const torch::Tensor &cos = tables.first, &sin = tables.second;
    for (const auto type : {torch::kFloat32, torch::kBFloat16}) {
      for (const auto& [batch, seq] : std::vector<std::pair<int64_t, int64_t>>{{1, 1}, {2, 13}}) {
        const Tensors values = {torch::randn({batch, seq, 3, head_dim}).to(type),
                                torch::randn({batch, seq, 1, head_dim}).to(type)};
        for (const bool strided : {false, true}) {
          expect_match(
              [&](const Tensors& in) {
                const auto [q, k] = rotary_qk(in[0], in[1], cos, sin);
                EXPECT_NE(made_by(q).find("RotaryQkFunction"), std::string::npos);
                return Tensors{q, k};
              },
              [&](const Tensors& in) {
                return Tensors{rotary_reference(in[0], cos.to(type), sin.to(type)),
                               rotary_reference(in[1], cos.to(type), sin.to(type))};
              },
              values, type == torch::kFloat32 ? kFp32 : kBf16, strided,
              "rotary head_dim " + std::to_string(head_dim) + " " + c10::toString(type) +
                  (strided ? " strided" : ""));
        }
      }
    }
  }
}

TEST_F(Kernels, RotaryFiniteDifferencesFp64) {
  const torch::Tensor angles = torch::rand({9, 5}) * 6;
  const torch::Tensor cos = angles.cos(), sin = angles.sin();
  const torch::Tensor q = models::leaf(torch::randn({2, 9, 2, 10})),
                      k = models::leaf(torch::randn({2, 9, 1, 10}));
  models::expect_gradients_match(
      [&] {
        const auto [rq, rk] = rotary_qk(q, k, cos, sin);
        return torch::cat({rq.reshape(-1), rk.reshape(-1)});
      },
      {q, k});
}

TEST_F(Kernels, SwigluMatchesComposite) {
  for (const auto& shape : std::vector<std::vector<int64_t>>{{1, 1}, {3, 37}, {64, 100}}) {
    for (const auto type : {torch::kFloat32, torch::kBFloat16}) {
      const Tensors values = {(3 * torch::randn(shape)).to(type), torch::randn(shape).to(type)};
      for (const bool strided : {false, true}) {
        expect_match(
            [](const Tensors& in) {
              const torch::Tensor out = swiglu(in[0], in[1], true);
              EXPECT_NE(made_by(out).find("SwigluFunction"), std::string::npos);
              return Tensors{out};
            },
            [](const Tensors& in) { return Tensors{swiglu_reference(in[0], in[1])}; }, values,
            type == torch::kFloat32 ? kFp32 : kBf16, strided,
            "swiglu " + std::to_string(shape.back()) + " " + c10::toString(type) +
                (strided ? " strided" : ""));
      }
    }
  }
}

TEST_F(Kernels, SwigluFiniteDifferencesFp64) {
  const torch::Tensor g = models::leaf(2 * torch::randn({5, 13})),
                      u = models::leaf(torch::randn({5, 13}));
  models::expect_gradients_match([&] { return swiglu(g, u, true); }, {g, u});
}

TEST_F(Kernels, ReadoutCrossEntropyMatchesComposite) {
  const int64_t vocab = 29, d = 37;
  for (const int64_t tokens : {1, 13}) {
    const Tensors values = {torch::randn({tokens, d}), 0.3 * torch::randn({vocab, d}),
                            torch::randint(0, vocab, {tokens})};
    // One chunk (the logits kept for backward) and chunks of 4 rows with a short last one.
    for (const int64_t chunk : {int64_t{1} << 20, 4 * vocab}) {
      for (const bool strided : {false, true}) {
        expect_match(
            [&](const Tensors& in) {
              const auto out = readout_cross_entropy(in[0], in[1], in[2], 0.8, chunk);
              EXPECT_NE(made_by(out.loss).find("ReadoutCrossEntropyFunction"), std::string::npos);
              return Tensors{out.loss, out.lse};
            },
            [](const Tensors& in) {
              const auto out = readout_cross_entropy_reference(in[0], in[1], in[2], 0.8);
              return Tensors{out.loss, out.lse};
            },
            values, kFp32, strided,
            "cross-entropy tokens " + std::to_string(tokens) + " chunk " + std::to_string(chunk) +
                (strided ? " strided" : ""));
      }
    }
  }
}

TEST_F(Kernels, ReadoutCrossEntropyUnderBf16Autocast) {
  // fp32 leaves cast by autocast's cache, bf16 products, fp32 softmax: as the composite.
  const Tensors values = {torch::randn({21, 40}), 0.3 * torch::randn({50, 40}),
                          torch::randint(0, 50, {21})};
  for (const int64_t chunk : {int64_t{1} << 20, int64_t{50 * 8}}) {
    expect_match(
        [&](const Tensors& in) {
          const models::Autocast autocast(torch::kCPU, true);
          const auto out = readout_cross_entropy(in[0], in[1], in[2], 1.0, chunk);
          EXPECT_NE(made_by(out.loss).find("ReadoutCrossEntropyFunction"), std::string::npos);
          return Tensors{out.loss, out.lse};
        },
        [](const Tensors& in) {
          const models::Autocast autocast(torch::kCPU, true);
          const auto out = readout_cross_entropy_reference(in[0], in[1], in[2], 1.0);
          return Tensors{out.loss, out.lse};
        },
        values, kBf16, false, "cross-entropy bf16 chunk " + std::to_string(chunk));
  }
}

TEST_F(Kernels, ReadoutCrossEntropyFiniteDifferencesFp64) {
  const torch::Tensor h = models::leaf(torch::randn({7, 11})),
                      w = models::leaf(0.5 * torch::randn({13, 11}));
  const torch::Tensor targets = torch::randint(0, 13, {7});
  for (const int64_t chunk : {int64_t{1} << 20, int64_t{13 * 3}})
    models::expect_gradients_match(
        [&] {
          const auto out = readout_cross_entropy(h, w, targets, 1.3, chunk);
          return torch::cat({out.loss, out.lse.square()});
        },
        {h, w});
}

TEST_F(Kernels, ReadoutCrossEntropyRejectsTargetsOutsideTheVocabulary) {
  const torch::Tensor h = torch::randn({3, 8}), w = torch::randn({5, 8});
  EXPECT_THROW(readout_cross_entropy(h, w, torch::tensor({0, 5, 1}), 1.0), c10::Error);
  EXPECT_THROW(readout_cross_entropy(h, w, torch::tensor({0, -1, 1}), 1.0), c10::Error);
}

TEST_F(Kernels, Bf16WeightCopyServesWhileTheWeightIsUnchanged) {
  torch::Tensor w = torch::randn({7, 5}).requires_grad_(true);
  torch::Tensor m = torch::zeros({35}), v = torch::zeros({35});
  const torch::Tensor copy = torch::empty({35}, torch::kBFloat16);
  {
    torch::NoGradGuard no_grad;
    torch::Tensor flat = w.detach().view(-1);
    adamw_update(flat, torch::randn({35}), m, v, {1e-2, 0.0, 0.9, 0.95, 1e-8, 1}, copy);
  }
  remember_bf16_copy(w, copy);
  const torch::Tensor x = torch::randn({3, 5});
  auto product = [&] {
    const models::Autocast autocast(torch::kCPU, true);
    return torch::matmul(x, bf16_weight(w).t());
  };
  // Outside autocast the weight itself; inside, the copy, with the gradient reaching w in fp32.
  EXPECT_EQ(bf16_weight(w).scalar_type(), torch::kFloat32);
  const torch::Tensor y = product();
  EXPECT_TRUE(
      torch::equal(y.detach(), torch::matmul(x.to(torch::kBFloat16), copy.view({7, 5}).t())));
  y.sum().backward();
  ASSERT_TRUE(w.grad().defined());
  EXPECT_EQ(w.grad().scalar_type(), torch::kFloat32);
  const torch::Tensor expected = torch::matmul(torch::ones({7, 3}), x);  // d sum(x W^T) / dW
  EXPECT_TRUE(torch::allclose(w.grad(), expected, 1e-2, 1e-2));
  // Changed by anything else (here an in-place add): the copy no longer serves.
  {
    torch::NoGradGuard no_grad;
    w.add_(1.0);
  }
  const models::Autocast autocast(torch::kCPU, true);
  EXPECT_TRUE(bf16_weight(w).is_same(w));
}

TEST_F(Kernels, CausalAttentionMatchesScaledDotProductAttention) {
  for (const auto& [seq, head_dim] :
       std::vector<std::pair<int64_t, int64_t>>{{1, 8}, {13, 6}, {37, 40}}) {
    for (const auto type : {torch::kFloat32, torch::kBFloat16}) {
      // [batch, seq, heads, head_dim] transposed to [batch, heads, seq, head_dim], as the model
      // does.
      const Tensors values = {torch::randn({2, seq, 3, head_dim}).to(type),
                              torch::randn({2, seq, 3, head_dim}).to(type),
                              torch::randn({2, seq, 3, head_dim}).to(type)};
      const double scale = 0.7 / std::sqrt(static_cast<double>(head_dim));
      expect_match(
          [&](const Tensors& in) {
            const torch::Tensor out = causal_attention(in[0].transpose(1, 2), in[1].transpose(1, 2),
                                                       in[2].transpose(1, 2), scale);
            EXPECT_NE(made_by(out).find("CausalAttentionFunction"), std::string::npos);
            return Tensors{out};
          },
          [&](const Tensors& in) {
            return Tensors{at::scaled_dot_product_attention(
                in[0].transpose(1, 2), in[1].transpose(1, 2), in[2].transpose(1, 2), {}, 0.0,
                /*is_causal=*/true, scale)};
          },
          values, type == torch::kFloat32 ? kFp32 : kBf16, false,
          "attention seq " + std::to_string(seq) + " " + c10::toString(type));
    }
  }
}

TEST_F(Kernels, CausalAttentionUnderBf16AutocastAndFiniteDifferencesFp64) {
  const Tensors values = {torch::randn({2, 4, 19, 16}), torch::randn({2, 4, 19, 16}),
                          torch::randn({2, 4, 19, 16})};
  expect_match(
      [](const Tensors& in) {
        const models::Autocast autocast(torch::kCPU, true);
        return Tensors{causal_attention(in[0], in[1], in[2], 0.25)};
      },
      [](const Tensors& in) {
        const models::Autocast autocast(torch::kCPU, true);
        return Tensors{at::scaled_dot_product_attention(in[0], in[1], in[2], {}, 0.0, true, 0.25)};
      },
      values, kBf16, false, "attention under autocast");
  const torch::Tensor q = models::leaf(torch::randn({1, 2, 9, 5})),
                      k = models::leaf(torch::randn({1, 2, 9, 5})),
                      v = models::leaf(torch::randn({1, 2, 9, 5}));
  models::expect_gradients_match([&] { return causal_attention(q, k, v, 0.6); }, {q, k, v});
  // Grouped-query sharing and long sequences are the device kernel's.
  EXPECT_FALSE(causal_attention_fusable(torch::randn({1, 4, 8, 8}), torch::randn({1, 2, 8, 8}),
                                        torch::randn({1, 2, 8, 8})));
  EXPECT_FALSE(causal_attention_fusable(torch::randn({1, 1, 513, 8}), torch::randn({1, 1, 513, 8}),
                                        torch::randn({1, 1, 513, 8})));
}

TEST_F(Kernels, AdamWMatchesComposite) {
  for (const int64_t size : {1, 13, 1000, 70001}) {
    for (const double wd : {0.0, 0.1}) {
      torch::Tensor p = torch::randn({size}), m = torch::zeros({size}), v = torch::zeros({size});
      torch::Tensor p_ref = p.clone(), m_ref = m.clone(), v_ref = v.clone();
      for (int64_t t = 1; t <= 5; ++t) {
        const torch::Tensor g = torch::randn({size});
        const AdamWHyper h{1e-2, wd, 0.9, 0.95, 1e-8, t};
        ASSERT_TRUE(adamw_fusable(p, g, m, v));
        adamw_update(p, g, m, v, h);
        adamw_update_reference(p_ref, g, m_ref, v_ref, h);
      }
      EXPECT_LE(difference(p, p_ref), kFp32) << size;
      EXPECT_LE(difference(m, m_ref), kFp32) << size;
      EXPECT_LE(difference(v, v_ref), kFp32) << size;
    }
  }
  // With a bf16 copy: the updated parameter rounded to nearest even, bit for bit as a cast.
  torch::Tensor p = torch::randn({1001}), m = torch::zeros({1001}), v = torch::zeros({1001});
  const torch::Tensor copy = torch::empty({1001}, torch::kBFloat16);
  adamw_update(p, torch::randn({1001}), m, v, {1e-2, 0.1, 0.9, 0.95, 1e-8, 1}, copy);
  EXPECT_TRUE(torch::equal(copy, p.to(torch::kBFloat16)));
  // A non-contiguous piece is not served (the optimizer then takes the composite path).
  const torch::Tensor wide = torch::zeros({4, 6});
  EXPECT_FALSE(adamw_fusable(wide.t(), wide.t(), wide.t(), wide.t()));
}

// ----- Under many threads: every kernel at 1, 3, 4 and 16 threads (oversubscribing a small machine
// is fine for correctness), on row counts that do not divide evenly among the threads and that
// make at::parallel_for cut chunks shorter than the grain asked for (2,048 rows of 192 with 16
// threads did, and the RMSNorm gain gradient lost rows). Each against its composite; where the
// kernel's result does not depend on how the rows are split, bitwise equal to one thread's.

// Sets the intra-op threads for a scope, restoring the previous count after.
class ThreadCount {
 public:
  explicit ThreadCount(int threads) : previous_(at::get_num_threads()) {
    at::set_num_threads(threads);
  }
  ~ThreadCount() { at::set_num_threads(previous_); }
  ThreadCount(const ThreadCount&) = delete;
  ThreadCount& operator=(const ThreadCount&) = delete;

 private:
  int previous_;
};

constexpr int kThreadCounts[] = {1, 3, 4, 16};

// At each thread count: fused against reference, and (when `split_independent`) every output and
// gradient bitwise equal to the fused result at one thread.
void expect_match_at_thread_counts(const Fn& fused, const Fn& reference, const Tensors& values,
                                   double tolerance, bool split_independent,
                                   const std::string& what) {
  Result one_thread;
  for (const int threads : kThreadCounts) {
    const ThreadCount scope(threads);
    ASSERT_EQ(at::get_num_threads(), threads);
    const std::string where = what + " at " + std::to_string(threads) + " threads";
    expect_match(fused, reference, values, tolerance, false, where);
    const Result r = run(fused, values, false);
    if (threads == 1) {
      one_thread = r;
      continue;
    }
    if (!split_independent) continue;
    for (size_t i = 0; i < r.outputs.size(); ++i)
      EXPECT_TRUE(torch::equal(r.outputs[i], one_thread.outputs[i])) << where << " output " << i;
    for (size_t i = 0; i < r.grads.size(); ++i)
      EXPECT_TRUE(torch::equal(r.grads[i], one_thread.grads[i])) << where << " gradient " << i;
  }
}

TEST_F(Kernels, AddRmsNormAtManyThreads) {
  // 2,048 x 192 is the shape whose chunks at 16 threads (158 rows) were shorter than the grain
  // (170).
  for (const auto& [rows, n] : std::vector<std::pair<int64_t, int64_t>>{
           {2048, 192}, {2051, 192}, {1000, 64}, {97, 4099}, {70001, 8}}) {
    for (const auto& [x_type, branch_type] : std::vector<std::pair<at::ScalarType, at::ScalarType>>{
             {torch::kFloat32, torch::kFloat32}, {torch::kBFloat16, torch::kBFloat16}}) {
      const Tensors values = {torch::randn({rows, n}).to(x_type),
                              torch::randn({rows, n}).to(branch_type), 1 + 0.3 * torch::randn({n})};
      // The gain's gradient sums `rows` terms: fp32 rounding grows as their square root, in the
      // composite's sum as in the kernel's.
      const double tolerance =
          x_type == torch::kFloat32
              ? kFp32 * std::max(1.0, std::sqrt(static_cast<double>(rows) / 2048.0))
              : kBf16;
      const std::string what = "add_rms_norm " + std::to_string(rows) + " x " + std::to_string(n) +
                               " " + c10::toString(x_type);
      expect_match_at_thread_counts(fused_add_rms_norm, composite_add_rms_norm, values, tolerance,
                                    true, what);
      expect_match_at_thread_counts(fused_rms_norm, composite_rms_norm,
                                    Tensors{values[0], values[2]}, tolerance, true,
                                    "rms_norm " + what);
    }
  }
}

TEST_F(Kernels, RotaryAtManyThreads) {
  const int64_t positions = 301, head_dim = 34;
  const auto tables = rotary_tables(positions, head_dim);
  const torch::Tensor &cos = tables.first, &sin = tables.second;
  for (const auto type : {torch::kFloat32, torch::kBFloat16}) {
    const Tensors values = {torch::randn({3, positions, 5, head_dim}).to(type),
                            torch::randn({3, positions, 1, head_dim}).to(type)};
    expect_match_at_thread_counts(
        [&](const Tensors& in) {
          const auto [q, k] = rotary_qk(in[0], in[1], cos, sin);
          return Tensors{q, k};
        },
        [&](const Tensors& in) {
          return Tensors{rotary_reference(in[0], cos.to(type), sin.to(type)),
                         rotary_reference(in[1], cos.to(type), sin.to(type))};
        },
        values, type == torch::kFloat32 ? kFp32 : kBf16, true,
        std::string("rotary ") + c10::toString(type));
  }
}

TEST_F(Kernels, SwigluAtManyThreads) {
  for (const auto type : {torch::kFloat32, torch::kBFloat16}) {
    const Tensors values = {(3 * torch::randn({1001, 517})).to(type),
                            torch::randn({1001, 517}).to(type)};
    expect_match_at_thread_counts(
        [](const Tensors& in) { return Tensors{swiglu(in[0], in[1], true)}; },
        [](const Tensors& in) { return Tensors{swiglu_reference(in[0], in[1])}; }, values,
        type == torch::kFloat32 ? kFp32 : kBf16, true,
        std::string("swiglu ") + c10::toString(type));
  }
}

TEST_F(Kernels, ReadoutCrossEntropyAtManyThreads) {
  // The weight's gradient comes from matrix products, whose split is LibTorch's: against the
  // composite only.
  const int64_t vocab = 259, d = 48, tokens = 1037;
  const Tensors values = {torch::randn({tokens, d}), 0.3 * torch::randn({vocab, d}),
                          torch::randint(0, vocab, {tokens})};
  for (const int64_t chunk : {int64_t{1} << 20, 97 * vocab})
    expect_match_at_thread_counts(
        [&](const Tensors& in) {
          const auto out = readout_cross_entropy(in[0], in[1], in[2], 0.8, chunk);
          return Tensors{out.loss, out.lse};
        },
        [](const Tensors& in) {
          const auto out = readout_cross_entropy_reference(in[0], in[1], in[2], 0.8);
          return Tensors{out.loss, out.lse};
        },
        values, kFp32, false, "cross-entropy chunk " + std::to_string(chunk));
}

TEST_F(Kernels, CausalAttentionAtManyThreads) {
  for (const auto type : {torch::kFloat32, torch::kBFloat16}) {
    const Tensors values = {torch::randn({3, 5, 67, 16}).to(type),
                            torch::randn({3, 5, 67, 16}).to(type),
                            torch::randn({3, 5, 67, 16}).to(type)};
    expect_match_at_thread_counts(
        [](const Tensors& in) { return Tensors{causal_attention(in[0], in[1], in[2], 0.3)}; },
        [](const Tensors& in) {
          return Tensors{at::scaled_dot_product_attention(in[0], in[1], in[2], {}, 0.0, true, 0.3)};
        },
        values, type == torch::kFloat32 ? kFp32 : kBf16, false,
        std::string("attention ") + c10::toString(type));
  }
}

TEST_F(Kernels, AdamWAtManyThreads) {
  const int64_t size = 1000003;  // 31 chunks of the grain and a short one
  const torch::Tensor p0 = torch::randn({size}), g = torch::randn({size});
  torch::Tensor one_thread;
  for (const int threads : kThreadCounts) {
    const ThreadCount scope(threads);
    torch::Tensor p = p0.clone(), m = torch::zeros({size}), v = torch::zeros({size});
    torch::Tensor p_ref = p0.clone(), m_ref = m.clone(), v_ref = v.clone();
    const torch::Tensor copy = torch::empty({size}, torch::kBFloat16);
    for (int64_t t = 1; t <= 3; ++t) {
      const AdamWHyper h{1e-2, 0.1, 0.9, 0.95, 1e-8, t};
      adamw_update(p, g * t, m, v, h, copy);
      adamw_update_reference(p_ref, g * t, m_ref, v_ref, h);
    }
    EXPECT_LE(difference(p, p_ref), kFp32) << threads << " threads";
    EXPECT_TRUE(torch::equal(copy, p.to(torch::kBFloat16))) << threads << " threads";
    if (threads == 1) one_thread = p;
    EXPECT_TRUE(torch::equal(p, one_thread)) << threads << " threads";
  }
}

// Without AVX2 (or with LADDER_KERNEL_ISA=none, as ctest's kernels.composite runs this suite) every
// kernel asked for takes its LibTorch composite, with the composite's values.
TEST(KernelFallback, EveryKernelTakesItsCompositeWithoutAvx2) {
  if (cpu_has_avx2()) GTEST_SKIP() << "the kernels run here; LADDER_KERNEL_ISA=none tests this";
  EXPECT_FALSE(cpu_has_avx512());
  torch::manual_seed(0);
  const torch::Tensor x = torch::randn({9, 24}).requires_grad_(true), g = 1 + torch::randn({24});
  const auto norm = add_rms_norm(x, x * 0.5, 0.7, g, 1e-5, true);
  EXPECT_EQ(made_by(norm.normed).find("AddRmsNormFunction"), std::string::npos);
  EXPECT_TRUE(
      torch::allclose(norm.normed, add_rms_norm_reference(x, x * 0.5, 0.7, g, 1e-5).normed));
  EXPECT_EQ(made_by(swiglu(x, x, true)).find("SwigluFunction"), std::string::npos);
  const torch::Tensor q = torch::randn({1, 2, 9, 8});
  EXPECT_FALSE(causal_attention_fusable(q, q, q));
  const torch::Tensor w = torch::randn({13, 24}), targets = torch::randint(0, 13, {9});
  EXPECT_FALSE(readout_cross_entropy_fusable(x, w, targets));
  EXPECT_FALSE(rotary_fusable(q, q, torch::ones({9, 4})));
  const torch::Tensor p = torch::randn({100});
  EXPECT_FALSE(adamw_fusable(p, p, p, p));
}

}  // namespace
}  // namespace ladder::kernels
