// Small arithmetic expressions, for the derived values of sweep files (trainer/sweep/sweep.h):
//     model.n_heads = "d_model / 64"
//     train.tokens  = "20 * N"
//     optim.lr      = "3e-3 * (256 / d_model) ^ 0.5"
//
// Numbers (3, 0.5, 3e-3), names (d_model, model.d_model, N; looked up by the caller), + - * / and
// ^ (power, right-associative), unary minus, parentheses, and the functions sqrt, exp, log
// (natural), log2, log10, abs, floor, ceil, round (half away from zero), min, max, pow. Evaluated
// in fp64.
#pragma once

#include <functional>
#include <string>

namespace ladder {

// The value of a name, or throws ladder::Error (an unknown name, a string-valued key).
using ExpressionLookup = std::function<double(const std::string& name)>;

// Evaluates `text`. A malformed expression, an unknown function, a division by zero or a
// non-finite result throws ladder::Error(where, "<text>: <what>").
double evaluate_expression(const std::string& text, const ExpressionLookup& lookup,
                           const std::string& where);

}  // namespace ladder
