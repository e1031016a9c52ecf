// The MPI job as a whole: initialisation, this process's rank, and the all-ranks error agreement
// that keeps the one error path (DESIGN.md contract 7) from hanging. The Communicator and
// ProcessMesh build on it.
#pragma once

#include <functional>

namespace ladder::parallel {

class MpiWorld {
 public:
  // MPI_Init_thread (funneled: only the main thread calls MPI). Works as a singleton without
  // mpirun.
  MpiWorld(int* argc, char*** argv);
  ~MpiWorld();  // MPI_Finalize
  MpiWorld(const MpiWorld&) = delete;
  MpiWorld& operator=(const MpiWorld&) = delete;

  int rank() const { return rank_; }
  int size() const { return size_; }
  int local_rank() const { return local_rank_; }  // this rank's index among the ranks on its node
  int local_size() const { return local_size_; }  // ranks on this node

  // Collective: how many ranks report `failed`. Every rank must call it at the same point; ranks
  // use it to agree that a start-up check (a recipe, a data folder) failed everywhere or somewhere,
  // and then all exit the same way instead of leaving the others waiting in a collective.
  int count_failures(bool failed) const;

  // Ends every rank of the job with `code` (MPI_Abort). For failures on one rank mid-run.
  [[noreturn]] void abort(int code) const;

 private:
  int rank_ = 0;
  int size_ = 1;
  int local_rank_ = 0;
  int local_size_ = 1;
};

// Runs `checks` on every rank and agrees on the outcome (start-up validation: a recipe, data, a run
// folder). Returns 0 when no rank threw ladder::Error; otherwise every rank returns
// kExitUserError, after one message from rank 0 when all ranks failed alike, or a message from each
// failing rank, with its number, when only some did (a file missing on one node). Collective.
// A job of one rank has nothing to agree on: the ladder::Error reaches the caller unchanged.
int check_on_every_rank(const MpiWorld& world, const std::function<void()>& checks);

// Runs `body` and returns its status. An AgreedError (thrown by every rank alike) prints once from
// rank 0 and returns kExitUserError everywhere. Any other exception ends the whole job within
// seconds: in a job of several ranks the failing rank prints "ladder: error: <message> [rank r]"
// and calls MPI_Abort (the others may be waiting in a collective and would hang); alone, it prints
// and returns 2.
int run_or_abort(const MpiWorld& world, const std::function<int()>& body);

}  // namespace ladder::parallel
