// The parallelism choices of a recipe ([parallel] and [diloco]) as enums with their names, free of
// LibTorch so that the recipe loader can name them (trainer/recipe/recipe.cpp validates).
#pragma once

#include "core/choice.h"

namespace ladder::parallel {

// parallel.schedule (parallel/pipeline.h).
enum class ScheduleKind { GPipe, OneFOneB, Interleaved };
inline constexpr Choice<ScheduleKind> kScheduleKindNames[] = {
    {ScheduleKind::OneFOneB, "1f1b"},
    {ScheduleKind::GPipe, "gpipe"},
    {ScheduleKind::Interleaved, "interleaved"}};

// parallel.stage_balance: what the automatic split of layers into pipeline stages balances.
enum class StageBalance { Flops, Params };
inline constexpr Choice<StageBalance> kStageBalanceNames[] = {{StageBalance::Flops, "flops"},
                                                              {StageBalance::Params, "params"}};

// diloco.pseudo_grad_dtype: how pseudo-gradients travel between islands (parallel/diloco.h).
enum class PseudoGradDtype { Fp32, Bf16, Int8, Int4 };
inline constexpr Choice<PseudoGradDtype> kPseudoGradDtypeNames[] = {
    {PseudoGradDtype::Fp32, "fp32"},
    {PseudoGradDtype::Bf16, "bf16"},
    {PseudoGradDtype::Int8, "int8"},
    {PseudoGradDtype::Int4, "int4"}};

// diloco.inner_state: the inner AdamW's moments at each outer step.
enum class InnerState { Keep, Reset };
inline constexpr Choice<InnerState> kInnerStateNames[] = {{InnerState::Keep, "keep"},
                                                          {InnerState::Reset, "reset"}};

}  // namespace ladder::parallel
