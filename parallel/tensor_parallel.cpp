#include "parallel/tensor_parallel.h"

namespace ladder::parallel {

CrossEntropyOutput vocab_parallel_cross_entropy(const torch::Tensor& logits,
                                                const torch::Tensor& targets) {
  const torch::Tensor x = logits.to(at::promote_types(logits.scalar_type(), torch::kFloat32));
  const torch::Tensor lse = torch::logsumexp(x, -1);  // log Z per position
  const torch::Tensor target_logit = x.gather(-1, targets.unsqueeze(-1)).squeeze(-1);
  return {(lse - target_logit).mean(), lse.square().mean()};
}

}  // namespace ladder::parallel
