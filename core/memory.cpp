#include "core/memory.h"

#include <c10/core/CPUAllocator.h>
#include <c10/cuda/CUDACachingAllocator.h>

#include <atomic>
#include <mutex>

namespace ladder {
namespace {

// Wraps LibTorch's CPU allocator: every allocation's size is added to `live` and subtracted when
// its memory is released; `peak` follows the highest `live` since the last reset.
class CountingCpuAllocator final : public c10::Allocator {
 public:
  explicit CountingCpuAllocator(c10::Allocator* inner) : inner_(inner) {}

  c10::DataPtr allocate(size_t n) override {
    c10::DataPtr inner = inner_->allocate(n);
    void* data = inner.get();
    const c10::Device device = inner.device();
    add(static_cast<int64_t>(n));
    // The context owns the inner allocation and remembers its size for the release.
    auto* context = new Allocation{std::move(inner), static_cast<int64_t>(n), this};
    return c10::DataPtr(data, context, &release, device);
  }
  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }

  int64_t live() const { return live_.load(std::memory_order_relaxed); }
  int64_t peak() const { return peak_.load(std::memory_order_relaxed); }
  void reset_peak() { peak_.store(live(), std::memory_order_relaxed); }

 private:
  struct Allocation {
    c10::DataPtr inner;
    int64_t bytes;
    CountingCpuAllocator* owner;
  };
  static void release(void* context) {
    auto* a = static_cast<Allocation*>(context);
    a->owner->live_.fetch_sub(a->bytes, std::memory_order_relaxed);
    delete a;  // releases the inner allocation
  }
  void add(int64_t bytes) {
    const int64_t now = live_.fetch_add(bytes, std::memory_order_relaxed) + bytes;
    int64_t seen = peak_.load(std::memory_order_relaxed);
    while (now > seen && !peak_.compare_exchange_weak(seen, now, std::memory_order_relaxed)) {
    }
  }

  c10::Allocator* inner_;
  std::atomic<int64_t> live_{0}, peak_{0};
};

CountingCpuAllocator& cpu_counter() {
  static CountingCpuAllocator* counter = [] {
    auto* c = new CountingCpuAllocator(c10::GetCPUAllocator());  // lives as long as its tensors
    c10::SetCPUAllocator(c, /*priority=*/1);
    return c;
  }();
  return *counter;
}

}  // namespace

int64_t allocated_bytes(const torch::Device& device) {
  if (device.is_cuda())
    return c10::cuda::CUDACachingAllocator::getDeviceStats(device.index())
        .allocated_bytes[0]
        .current;
  return cpu_counter().live();
}

int64_t peak_allocated_bytes(const torch::Device& device) {
  if (device.is_cuda())
    return c10::cuda::CUDACachingAllocator::getDeviceStats(device.index()).allocated_bytes[0].peak;
  return cpu_counter().peak();
}

void reset_peak_allocated_bytes(const torch::Device& device) {
  if (device.is_cuda())
    c10::cuda::CUDACachingAllocator::resetPeakStats(device.index());
  else
    cpu_counter().reset_peak();
}

}  // namespace ladder
