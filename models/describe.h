// What a model says about itself: its start-up log lines (size, and the architecture's own line for
// mixture of experts and ParScale) and its trace attributes (sizes, FLOPs, the architecture's
// keys), next to the architectures' code.
#pragma once

#include <string>
#include <vector>

#include "core/attributes.h"
#include "models/config.h"
#include "models/model.h"

namespace ladder::models {

std::vector<std::string> describe_model(const ModelConfig& c, const SizeAccounting& acc,
                                        int64_t vocab);

// arch, N, total/active/embedding parameters, FLOPs per token, width, depth, heads, vocabulary, and
// every architecture's keys (the values of the architectures not in use are their defaults).
Attributes model_attributes(const ModelConfig& c, const SizeAccounting& acc, int64_t vocab);

}  // namespace ladder::models
