// All-reduce and all-gather bus bandwidth of the Communicator, 1 MB to 256 MB of fp32, in the
// convention of nccl-tests: for a message of S bytes on n ranks taking t seconds,
//   all-reduce  algbw = S / t, busbw = algbw * 2 (n - 1) / n
//   all-gather  algbw = S / t (S the gathered output), busbw = algbw * (n - 1) / n
//   mpirun -np 2 build/bench/bench_comm_bandwidth
#include <mpi.h>

#include <chrono>
#include <cstdio>

#include "parallel/communicator.h"

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  {
    auto world = ladder::parallel::Communicator::world();
    const int n = world.size();
    if (world.rank() == 0)
      std::printf("%-10s %-11s %10s %12s %12s\n", "collective", "bytes", "time (ms)", "algbw GB/s",
                  "busbw GB/s");
    for (const char* op : {"all_reduce", "all_gather"}) {
      for (int64_t mb : {1, 4, 16, 64, 256}) {
        const int64_t bytes = mb << 20;
        const int64_t floats = bytes / 4;
        const bool reduce = op[4] == 'r';
        torch::Tensor t = torch::ones({reduce ? floats : floats / n});
        const int iters = mb >= 64 ? 5 : 20;
        auto run = [&] {
          if (reduce)
            world.all_reduce(t);
          else
            world.all_gather(t);
        };
        run();  // warm-up
        world.barrier();
        const auto start = std::chrono::steady_clock::now();
        for (int i = 0; i < iters; ++i)
          run();
        double s =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() / iters;
        MPI_Allreduce(MPI_IN_PLACE, &s, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
        const double algbw = bytes / s / 1e9;
        const double busbw = algbw * (reduce ? 2.0 * (n - 1) / n : double(n - 1) / n);
        if (world.rank() == 0)
          std::printf("%-10s %-11lld %10.2f %12.2f %12.2f\n", op, (long long)bytes, s * 1e3, algbw,
                      busbw);
      }
    }
  }
  MPI_Finalize();
  return 0;
}
