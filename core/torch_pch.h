// The precompiled header for every translation unit that uses LibTorch (see
// LadderDependencies.cmake).
#pragma once
#include <torch/torch.h>
