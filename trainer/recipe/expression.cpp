#include "trainer/recipe/expression.h"

#include <cctype>
#include <cmath>
#include <cstdlib>
#include <vector>

#include "core/error.h"

namespace ladder {
namespace {

// Recursive descent over the grammar
//   sum     = product (("+" | "-") product)*
//   product = unary (("*" | "/") unary)*
//   unary   = "-" unary | power
//   power   = atom ("^" unary)?            (right-associative; -2^2 = -4 as in mathematics)
//   atom    = number | name | name "(" sum ("," sum)* ")" | "(" sum ")"
class Parser {
 public:
  Parser(const std::string& text, const ExpressionLookup& lookup, const std::string& where)
      : s_(text), lookup_(lookup), where_(where) {}

  double parse() {
    const double v = sum();
    skip_space();
    if (i_ < s_.size()) fail("unexpected '" + std::string(1, s_[i_]) + "' at position " + pos());
    if (!std::isfinite(v)) fail("the value is not finite");
    return v;
  }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    throw Error(where_, "\"" + s_ + "\": " + what);
  }
  std::string pos() const { return std::to_string(i_ + 1); }
  void skip_space() {
    while (i_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[i_])))
      ++i_;
  }
  bool take(char c) {
    skip_space();
    if (i_ < s_.size() && s_[i_] == c) return ++i_, true;
    return false;
  }

  double sum() {
    double v = product();
    for (;;) {
      if (take('+'))
        v += product();
      else if (take('-'))
        v -= product();
      else
        return v;
    }
  }

  double product() {
    double v = unary();
    for (;;) {
      if (take('*')) {
        v *= unary();
      } else if (take('/')) {
        const double d = unary();
        if (d == 0) fail("division by zero");
        v /= d;
      } else {
        return v;
      }
    }
  }

  double unary() {
    if (take('-')) return -unary();
    if (take('+')) return unary();
    return power();
  }

  double power() {
    const double base = atom();
    if (take('^')) return std::pow(base, unary());
    return base;
  }

  double atom() {
    skip_space();
    if (i_ >= s_.size()) fail("the expression ends early");
    const char c = s_[i_];
    if (take('(')) {
      const double v = sum();
      if (!take(')')) fail("missing ')' at position " + pos());
      return v;
    }
    if (std::isdigit(static_cast<unsigned char>(c)) || c == '.') {
      const char* begin = s_.c_str() + i_;
      char* end = nullptr;
      const double v = std::strtod(begin, &end);
      if (end == begin) fail("malformed number at position " + pos());
      i_ += static_cast<size_t>(end - begin);
      return v;
    }
    if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
      const size_t start = i_;
      while (i_ < s_.size() &&
             (std::isalnum(static_cast<unsigned char>(s_[i_])) || s_[i_] == '_' || s_[i_] == '.'))
        ++i_;
      const std::string name = s_.substr(start, i_ - start);
      if (take('(')) return call(name);
      return lookup_(name);
    }
    fail("unexpected '" + std::string(1, c) + "' at position " + pos());
  }

  double call(const std::string& name) {
    std::vector<double> args;
    if (!take(')')) {
      do {
        args.push_back(sum());
      } while (take(','));
      if (!take(')')) fail("missing ')' after the arguments of " + name + "()");
    }
    auto need = [&](size_t n) {
      if (args.size() != n)
        fail(name + "() takes " + std::to_string(n) + " argument" + (n == 1 ? "" : "s") + ", got " +
             std::to_string(args.size()));
    };
    auto positive = [&](double x) {
      if (!(x > 0)) fail(name + "() of a value <= 0");
      return x;
    };
    if (name == "sqrt") {
      need(1);
      if (args[0] < 0) fail("sqrt() of a negative value");
      return std::sqrt(args[0]);
    }
    if (name == "exp") return need(1), std::exp(args[0]);
    if (name == "log") return need(1), std::log(positive(args[0]));
    if (name == "log2") return need(1), std::log2(positive(args[0]));
    if (name == "log10") return need(1), std::log10(positive(args[0]));
    if (name == "abs") return need(1), std::abs(args[0]);
    if (name == "floor") return need(1), std::floor(args[0]);
    if (name == "ceil") return need(1), std::ceil(args[0]);
    if (name == "round") return need(1), std::round(args[0]);
    if (name == "pow") return need(2), std::pow(args[0], args[1]);
    if (name == "min" || name == "max") {
      if (args.empty()) fail(name + "() needs at least one argument");
      double v = args[0];
      for (double a : args)
        v = name == "min" ? std::min(v, a) : std::max(v, a);
      return v;
    }
    fail("unknown function " + name +
         "() (functions: sqrt, exp, log, log2, log10, abs, floor, ceil, round, min, max, pow)");
  }

  const std::string& s_;
  const ExpressionLookup& lookup_;
  const std::string& where_;
  size_t i_ = 0;
};

}  // namespace

double evaluate_expression(const std::string& text, const ExpressionLookup& lookup,
                           const std::string& where) {
  return Parser(text, lookup, where).parse();
}

}  // namespace ladder
