// Compiles core/torch_pch.h once; targets reuse the result through ladder_use_torch_pch().
#include "core/torch_pch.h"
