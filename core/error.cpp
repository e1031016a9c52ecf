#include "core/error.h"

namespace ladder {

Error::Error(std::string where, std::string what)
    : std::runtime_error(where.empty() ? what : where + ": " + what),
      where_(std::move(where)),
      detail_(std::move(what)) {}

std::string format_error(const std::exception& e) {
  return std::string("ladder: error: ") + e.what();
}

}  // namespace ladder
