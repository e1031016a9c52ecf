#include "optim/schedule.h"

#include <algorithm>
#include <cmath>

namespace ladder::optim {

double lr_at(int64_t step, int64_t total_steps, double peak, const ScheduleConfig& s) {
  if (step < s.warmup) return peak * static_cast<double>(step + 1) / static_cast<double>(s.warmup);
  const double f = s.final_lr_fraction;
  if (s.kind == LrSchedule::Constant) return peak;
  if (s.kind == LrSchedule::Cosine) {
    const double span = std::max<int64_t>(1, total_steps - 1 - s.warmup);
    const double p = std::min(1.0, static_cast<double>(step - s.warmup) / span);
    return peak * (f + (1.0 - f) * 0.5 * (1.0 + std::cos(M_PI * p)));
  }
  // wsd
  const int64_t decay_start = wsd_decay_start(total_steps, s);
  const int64_t decay_steps = total_steps - decay_start;
  if (step < decay_start) return peak;
  const double q = std::min(1.0, static_cast<double>(step - decay_start + 1) / decay_steps);
  const double shape = s.decay_shape == DecayShape::OneMinusSqrt ? 1.0 - std::sqrt(q) : 1.0 - q;
  return peak * (f + (1.0 - f) * shape);
}

int64_t wsd_decay_start(int64_t total_steps, const ScheduleConfig& s) {
  const auto decay_steps = std::max<int64_t>(
      1, static_cast<int64_t>(std::llround(s.decay_fraction * static_cast<double>(total_steps))));
  return total_steps - decay_steps;
}

}  // namespace ladder::optim
