#include "models/precision.h"

#include <ATen/autocast_mode.h>

namespace ladder::models {

Autocast::Autocast(torch::Device device, bool bf16) : device_(device.type()), active_(bf16) {
  if (!active_) return;
  was_enabled_ = at::autocast::is_autocast_enabled(device_);
  was_dtype_ = at::autocast::get_autocast_dtype(device_);
  at::autocast::set_autocast_enabled(device_, true);
  at::autocast::set_autocast_dtype(device_, at::kBFloat16);
  at::autocast::increment_nesting();
}

Autocast::~Autocast() {
  if (!active_) return;
  at::autocast::set_autocast_enabled(device_, was_enabled_);
  at::autocast::set_autocast_dtype(device_, was_dtype_);
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
}

WeightCastCache::WeightCastCache() {
  at::autocast::increment_nesting();
}

WeightCastCache::~WeightCastCache() {
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
}

NoAutocast::NoAutocast(c10::DeviceType device)
    : device_(device), was_enabled_(at::autocast::is_autocast_enabled(device)) {
  at::autocast::set_autocast_enabled(device_, false);
}

NoAutocast::~NoAutocast() {
  at::autocast::set_autocast_enabled(device_, was_enabled_);
}

}  // namespace ladder::models
