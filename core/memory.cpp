#include "core/memory.h"

#include <c10/core/CPUAllocator.h>
#include <c10/cuda/CUDACachingAllocator.h>

#include <atomic>
#include <mutex>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include <climits>
#include <cstdlib>

namespace ladder {

void keep_freed_cpu_memory() {
#if defined(__GLIBC__)
  if (std::getenv("MALLOC_MMAP_THRESHOLD_") || std::getenv("MALLOC_TRIM_THRESHOLD_")) return;
  mallopt(M_MMAP_THRESHOLD, 32 << 20);  // glibc's largest
  mallopt(M_TRIM_THRESHOLD, INT_MAX);
#endif
}

namespace {

// Wraps LibTorch's CPU allocator: every allocation's size is added to `live` and subtracted when
// its memory is released; `peak` follows the highest `live` since the last reset. LibTorch requires
// a CPU allocation's context to be its data pointer (raw_allocate, oneDNN's scratch buffers), so
// the bookkeeping lives in a header just before the data, inside the inner allocation.
class CountingCpuAllocator final : public c10::Allocator {
 public:
  explicit CountingCpuAllocator(c10::Allocator* inner) : inner_(inner) {}

  c10::DataPtr allocate(size_t n) override {
    c10::DataPtr inner = inner_->allocate(n + kHeader);
    auto* base = static_cast<char*>(inner.get());
    const c10::Device device = inner.device();
    // The inner allocation's handle moves into its own header: no second allocation per tensor.
    new (base) Header{std::move(inner), static_cast<int64_t>(n), this};
    add(static_cast<int64_t>(n));
    void* data = base + kHeader;
    return c10::DataPtr(data, data, &release, device);
  }
  c10::DeleterFnPtr raw_deleter() const override { return &release; }
  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }

  int64_t live() const { return live_.load(std::memory_order_relaxed); }
  int64_t peak() const { return peak_.load(std::memory_order_relaxed); }
  void reset_peak() { peak_.store(live(), std::memory_order_relaxed); }

 private:
  struct Header {
    c10::DataPtr inner;
    int64_t bytes;
    CountingCpuAllocator* owner;
  };
  static constexpr size_t kHeader = 64;  // keeps the data 64-byte aligned, as LibTorch's is
  static_assert(sizeof(Header) <= kHeader);

  static void release(void* data) {
    auto* header = reinterpret_cast<Header*>(static_cast<char*>(data) - kHeader);
    header->owner->live_.fetch_sub(header->bytes, std::memory_order_relaxed);
    c10::DataPtr inner = std::move(header->inner);  // out of the memory it frees
    header->~Header();
    // `inner` frees the allocation, header included, as it goes out of scope.
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
