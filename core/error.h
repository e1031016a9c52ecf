// The one error path of ladder (DESIGN.md contract 7).
//
// A user mistake — a bad recipe, flag, missing data, a corrupt file — is thrown as ladder::Error
// with a `where` (file:line, a key, a flag) and a `what`. The CLI prints it as
//     ladder: error: <where>: <what>
// and exits with kExitUserError on every rank, without a stack dump. Bugs stay ordinary exceptions.
#pragma once

#include <stdexcept>
#include <string>

namespace ladder {

constexpr int kExitUserError = 2;

class Error : public std::runtime_error {
 public:
  Error(std::string where, std::string what);
  const std::string& where() const { return where_; }
  const std::string& detail() const { return detail_; }

 private:
  std::string where_;
  std::string detail_;
};

// "ladder: error: <where>: <what>" for an Error, "ladder: error: <what>" for anything else.
std::string format_error(const std::exception& e);

}  // namespace ladder
