// A job in which one rank fails while the others wait in a collective. Used by test_cli: the whole
// job must end non-zero within seconds with the failing rank's message (DESIGN contract 7).
//   fault_job throw   rank 1 throws while rank 0 waits in an all-reduce
//   fault_job stall   rank 1 never joins the all-reduce; the timeout (2 s) names it and aborts
#include <chrono>
#include <string>
#include <thread>

#include "parallel/communicator.h"
#include "parallel/world.h"

int main(int argc, char** argv) {
  ladder::parallel::MpiWorld world(&argc, &argv);
  const std::string mode = argc > 1 ? argv[1] : "throw";
  return ladder::parallel::run_or_abort(world, [&] {
    ladder::parallel::Communicator comm = ladder::parallel::Communicator::world(/*timeout_s=*/2);
    torch::Tensor t = torch::ones({4});
    if (world.rank() == 1) {
      if (mode == "throw") throw std::runtime_error("rank 1 failed on purpose");
      while (true)
        std::this_thread::sleep_for(std::chrono::seconds(1));  // stall
    }
    comm.all_reduce(t);
    return 0;
  });
}
