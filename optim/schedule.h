// Learning-rate schedules. lr_at(step) is the rate of the update that ends step `step` (0-based):
//   warmup     linear from peak/warmup to peak over the first `warmup` steps
//   constant   peak
//   cosine     peak * (f + (1 - f) * (1 + cos(pi * p)) / 2), p from 0 to 1 after warmup, f the
//   final fraction wsd        warmup-stable-decay (Hu et al. 2024; Haegele et al. 2024): peak until
//   the last
//              decay_fraction of the steps, then down to f * peak, linearly or as 1 - sqrt (the
//              shape "Scaling Laws and Compute-Optimal Training Beyond Fixed Training Durations"
//              recommends)
#pragma once

#include <cstdint>

#include "optim/config.h"

namespace ladder::optim {

double lr_at(int64_t step, int64_t total_steps, double peak_lr, const ScheduleConfig& schedule);

// Where wsd's decay begins: its last round(decay_fraction x total_steps) steps (at least one)
// decay. A cooldown branched from a stable run starts here (trainer/sweep/sweep.h, [cooldown]).
int64_t wsd_decay_start(int64_t total_steps, const ScheduleConfig& schedule);

}  // namespace ladder::optim
