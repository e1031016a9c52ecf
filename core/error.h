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

// A user-facing error that every rank of the job throws at the same point, because they decided it
// on the same all-reduced values (a diverged loss): the job ends with one message from rank 0 and
// exit status 2 on every rank, without MPI_Abort (parallel::run_or_abort).
class AgreedError : public Error {
 public:
  using Error::Error;
};

// "ladder: error: <where>: <what>" for an Error, "ladder: error: <what>" for anything else.
std::string format_error(const std::exception& e);

}  // namespace ladder
