#include "parallel/gradient_reduction.h"

#include <spdlog/spdlog.h>

#include <algorithm>

namespace ladder::parallel {

GradientReduction::GradientReduction(const std::vector<torch::Tensor>& values,
                                     const std::vector<bool>& split_experts,
                                     const ProcessMesh& mesh, const DataParallelOptions& options) {
  std::vector<torch::Tensor> dense, experts;
  for (size_t k = 0; k < values.size(); ++k) {
    (split_experts[k] ? expert_index_ : dense_index_).push_back(k);
    (split_experts[k] ? experts : dense).push_back(values[k]);
  }
  DataParallelOptions dense_options = options;
  dense_options.late_tensors.clear();
  for (size_t k : options.late_tensors)
    for (size_t i = 0; i < dense_index_.size(); ++i)
      if (dense_index_[i] == k) dense_options.late_tensors.push_back(i);
  dp_size_ = mesh.dp().size();
  dense_ = std::make_unique<DataParallel>(dense, mesh.dp(), dense_options);
  if (!experts.empty()) {
    DataParallelOptions expert_options = options;
    expert_options.late_tensors.clear();
    experts_ = std::make_unique<DataParallel>(experts, mesh.expert_dp(), expert_options);
  }
}

void GradientReduction::zero_grad() {
  each([](auto& d) { d.zero_grad(); });
}
void GradientReduction::before_backward(bool last) {
  each([&](auto& d) { d.before_backward(last); });
}
void GradientReduction::finish_grad_sync() {
  each([](auto& d) { d.finish_grad_sync(); });
}
void GradientReduction::gather_params() {
  each([](auto& d) { d.gather_params(); });
}

std::vector<FlatRange> GradientReduction::owned() const {
  return segments(&DataParallel::owned);
}
std::vector<FlatRange> GradientReduction::shard() const {
  return segments(&DataParallel::shard);
}

CommStats GradientReduction::take_stats() {
  CommStats total;
  each([&](auto& d) {
    const CommStats s = d.take_stats();
    total.seconds += s.seconds, total.bytes += s.bytes, total.collectives += s.collectives;
  });
  return total;
}

int64_t GradientReduction::bucket_count() const {
  return dense_->bucket_count() + (experts_ ? experts_->bucket_count() : 0);
}

std::string GradientReduction::describe(int64_t microbatches, int64_t micro_batch, double bucket_mb,
                                        bool overlap) const {
  return fmt::format(
      "data parallel: dp={}, micro-batches of {} x {} sequences per rank and step, {} gradient "
      "buckets of <= {} MiB{}{}",
      dp_size_, microbatches, micro_batch, bucket_count(), bucket_mb,
      overlap ? ", overlapped with backward" : "",
      dense_->sharded_optimizer() ? ", ZeRO-1 (optimizer state sharded)" : "");
}

std::vector<FlatRange> GradientReduction::segments(
    const std::vector<FlatRange>& (DataParallel::*ranges)() const) const {
  std::vector<FlatRange> out;
  auto add = [&](const DataParallel& d, const std::vector<size_t>& index) {
    for (const auto& r : (d.*ranges)())
      out.push_back(FlatRange{index[r.tensor], r.offset, r.length});
  };
  add(*dense_, dense_index_);
  if (experts_) add(*experts_, expert_index_);
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) {
    return a.tensor != b.tensor ? a.tensor < b.tensor : a.offset < b.offset;
  });
  return out;
}

}  // namespace ladder::parallel
