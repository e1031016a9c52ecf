// A recipe choice as an enum with its names, declared once next to the enum: the recipe's schema
// takes its choices from the table (trainer/recipe/recipe.cpp), the resolved recipe, logs and
// traces print its names, and code branches on the enum instead of comparing strings.
#pragma once

#include <cstddef>
#include <stdexcept>
#include <string>
#include <string_view>

namespace ladder {

template <class E>
struct Choice {
  E value;
  const char* name;
};

template <class E, size_t N>
const char* choice_name(const Choice<E> (&table)[N], E value) {
  for (const auto& c : table)
    if (c.value == value) return c.name;
  throw std::logic_error("a choice without a name");
}

// The value named `name`; std::invalid_argument for a name the table lacks (the recipe loader
// checks names before it converts them).
template <class E, size_t N>
E choice_value(const Choice<E> (&table)[N], std::string_view name) {
  for (const auto& c : table)
    if (name == c.name) return c.value;
  throw std::invalid_argument("no choice named " + std::string(name));
}

}  // namespace ladder
