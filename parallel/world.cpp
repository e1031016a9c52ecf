#include "parallel/world.h"

#include <mpi.h>

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>

#include "core/error.h"

namespace ladder::parallel {

MpiWorld::MpiWorld(int* argc, char*** argv) {
  int provided = 0;
  MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
  // Errors in MPI calls are bugs or dead peers: let MPI abort the job rather than return codes that
  // every call site would have to check.
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_ARE_FATAL);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &size_);
  // The ranks that share this node (MPI-3 shared-memory split: works under mpirun and srun alike).
  MPI_Comm node = MPI_COMM_NULL;
  MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &node);
  MPI_Comm_rank(node, &local_rank_);
  MPI_Comm_size(node, &local_size_);
  MPI_Comm_free(&node);
}

MpiWorld::~MpiWorld() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}

int MpiWorld::count_failures(bool failed) const {
  int mine = failed ? 1 : 0, total = 0;
  MPI_Allreduce(&mine, &total, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
  return total;
}

void MpiWorld::abort(int code) const {
  MPI_Abort(MPI_COMM_WORLD, code);
  std::_Exit(code);  // MPI_Abort does not return; this is for the compiler
}

int check_on_every_rank(const MpiWorld& world, const std::function<void()>& checks) {
  // Alone, there is nothing to agree on: the error goes to the caller as it is (a sweep running
  // runs in its own process records it).
  if (world.size() == 1) {
    checks();
    return 0;
  }
  std::string failure;
  try {
    checks();
  } catch (const Error& e) {
    failure = format_error(e);
  }
  const int failures = world.count_failures(!failure.empty());
  if (failures == 0) return 0;
  if (!failure.empty() && (world.rank() == 0 || failures < world.size())) {
    const std::string rank =
        failures < world.size() ? " [rank " + std::to_string(world.rank()) + "]" : "";
    std::fprintf(stderr, "%s%s\n", failure.c_str(), rank.c_str());
    std::fflush(stderr);
  }
  return kExitUserError;
}

int run_or_abort(const MpiWorld& world, const std::function<int()>& body) {
  std::string message;
  try {
    return body();
  } catch (const AgreedError& e) {
    // Every rank is here: no one waits in a collective, so no abort, and one message.
    if (world.rank() == 0) std::fprintf(stderr, "%s\n", format_error(e).c_str());
    return kExitUserError;
  } catch (const std::exception& e) {
    message = format_error(e);
  } catch (...) {
    message = "ladder: error: unknown exception";
  }
  if (world.size() == 1) {
    std::fprintf(stderr, "%s\n", message.c_str());
    return kExitUserError;
  }
  std::fprintf(stderr, "%s [rank %d]\n", message.c_str(), world.rank());
  std::fflush(stderr);
  world.abort(kExitUserError);
}

}  // namespace ladder::parallel
