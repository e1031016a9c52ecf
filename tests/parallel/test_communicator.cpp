// Runs under mpirun (2 and 4 ranks, registered in tests/CMakeLists.txt). Every collective is
// checked against a reference each rank computes locally, on the world and on the sub-groups of the
// mesh.
#include <gtest/gtest.h>

#include <mpi.h>
#include <cstdlib>

#include "core/error.h"
#include "parallel/communicator.h"
#include "parallel/mesh.h"

namespace ladder::parallel {
namespace {

// What rank r contributes: small integers, so every dtype (bf16 included) holds them and their sums
// exactly.
torch::Tensor contribution(int r, torch::ScalarType dtype, std::vector<int64_t> shape = {3, 4}) {
  int64_t numel = 1;
  for (int64_t d : shape)
    numel *= d;
  return (torch::arange(numel, torch::kFloat64).remainder(8).view(shape) + 4.0 * (r + 1)).to(dtype);
}

const torch::ScalarType kDtypes[] = {torch::kFloat32, torch::kFloat64, torch::kBFloat16,
                                     torch::kFloat16, torch::kInt64};

// Checks every collective on `comm`.
void check_collectives(const Communicator& comm) {
  const int n = comm.size(), me = comm.rank();
  for (auto dtype : kDtypes) {
    SCOPED_TRACE(std::string(c10::toString(dtype)) + " on " + comm.name());
    // all-reduce: sum, avg, max
    torch::Tensor sum_ref = torch::zeros({3, 4}, torch::kFloat64), max_ref;
    for (int r = 0; r < n; ++r) {
      sum_ref += contribution(r, torch::kFloat64);
      max_ref = r == 0 ? contribution(r, torch::kFloat64)
                       : torch::maximum(max_ref, contribution(r, torch::kFloat64));
    }
    torch::Tensor t = contribution(me, dtype);
    comm.all_reduce(t, ReduceOp::Sum);
    EXPECT_EQ(t.scalar_type(), dtype);
    EXPECT_TRUE(torch::equal(t.to(torch::kFloat64), sum_ref)) << t;
    t = contribution(me, dtype);
    comm.all_reduce(t, ReduceOp::Max);
    EXPECT_TRUE(torch::equal(t.to(torch::kFloat64), max_ref));
    t = contribution(me, dtype);
    comm.all_reduce(t, ReduceOp::Avg);
    const torch::Tensor avg_ref = dtype == torch::kInt64 ? sum_ref.div(n, "trunc") : sum_ref / n;
    EXPECT_TRUE(torch::allclose(t.to(torch::kFloat64), avg_ref, 1e-2, 0)) << t;

    // all-gather: rank blocks in order
    std::vector<torch::Tensor> blocks;
    for (int r = 0; r < n; ++r)
      blocks.push_back(contribution(r, dtype));
    EXPECT_TRUE(torch::equal(comm.all_gather(contribution(me, dtype)), torch::cat(blocks)));

    // reduce-scatter: this rank's block of the sum
    const torch::Tensor big = contribution(me, dtype, {static_cast<int64_t>(n) * 2, 6});
    torch::Tensor big_ref = torch::zeros({n * 2, 6}, torch::kFloat64);
    for (int r = 0; r < n; ++r)
      big_ref += contribution(r, torch::kFloat64, {n * 2, 6});
    EXPECT_TRUE(torch::equal(comm.reduce_scatter(big).to(torch::kFloat64),
                             big_ref.slice(0, me * 2, me * 2 + 2)));

    // broadcast from the last rank
    t = contribution(me, dtype);
    comm.broadcast(t, n - 1);
    EXPECT_TRUE(torch::equal(t, contribution(n - 1, dtype)));
  }
}

TEST(Communicator, CollectivesOnTheWorld) {
  check_collectives(Communicator::world(60));
}

TEST(Communicator, CollectivesOnEveryMeshAxis) {
  Communicator world = Communicator::world(60);
  // 4 ranks: a 2 x 2 mesh (tp = 2, dp = 2); 2 ranks: tp = 2.
  MeshShape shape;
  shape.tp = 2;
  shape.dp = world.size() / 2;
  ProcessMesh mesh(world, shape);
  const MeshCoord c = mesh.coord();
  EXPECT_EQ(mesh.tp().size(), 2);
  EXPECT_EQ(mesh.tp().rank(), c.tp);
  EXPECT_EQ(mesh.dp().size(), shape.dp);
  EXPECT_EQ(mesh.dp().rank(), c.dp);
  EXPECT_EQ(mesh.pp().size(), 1);
  // tp fastest: the tp group holds consecutive world ranks.
  EXPECT_EQ(mesh.tp().world_ranks(),
            (std::vector<int>{world.rank() - c.tp, world.rank() - c.tp + 1}));
  for (const Communicator* g : {&mesh.tp(), &mesh.dp(), &mesh.replica()})
    check_collectives(*g);
}

TEST(Mesh, CoordinatesVaryTpFastest) {
  const MeshShape s{2, 3, 2, 2};
  for (int r = 0; r < s.size(); ++r) {
    const MeshCoord c = mesh_coord(s, r);
    EXPECT_EQ(((c.island * s.dp + c.dp) * s.pp + c.pp) * s.tp + c.tp, r);
  }
  EXPECT_EQ(mesh_coord(s, 1).tp, 1);
  EXPECT_EQ(mesh_coord(s, 2).pp, 1);
  EXPECT_EQ(mesh_coord(s, 6).dp, 1);
  EXPECT_EQ(mesh_coord(s, 12).island, 1);
}

TEST(Mesh, WrongSizeIsAUserError) {
  Communicator world = Communicator::world(60);
  MeshShape s;
  s.tp = world.size() + 1;
  EXPECT_THROW(ProcessMesh(world, s), Error);
}

TEST(Communicator, UnevenAllToAll) {
  Communicator world = Communicator::world(60);
  const int n = world.size(), me = world.rank();
  // Rank s sends (s + d + 1) rows to rank d; each row is [s, d, k].
  std::vector<int64_t> send(n), recv(n);
  std::vector<torch::Tensor> rows;
  for (int d = 0; d < n; ++d) {
    send[d] = me + d + 1;
    recv[d] = d + me + 1;
    for (int64_t k = 0; k < send[d]; ++k)
      rows.push_back(torch::tensor({int64_t(me), int64_t(d), k}));
  }
  const torch::Tensor out = world.all_to_all(torch::stack(rows), send, recv);
  std::vector<torch::Tensor> expected;
  for (int s = 0; s < n; ++s)
    for (int64_t k = 0; k < recv[s]; ++k)
      expected.push_back(torch::tensor({int64_t(s), int64_t(me), k}));
  EXPECT_TRUE(torch::equal(out, torch::stack(expected)));
  std::vector<int64_t> too_many = send;
  too_many[0] += 1;  // the counts no longer add up to the rows given
  EXPECT_THROW(world.all_to_all(torch::stack(rows), too_many, recv), std::invalid_argument);
}

TEST(Communicator, PointToPointRing) {
  Communicator world = Communicator::world(60);
  const int n = world.size(), me = world.rank();
  // Everyone sends to the right and receives from the left at once: no ordering deadlock.
  torch::Tensor out = torch::full({5}, double(me), torch::kFloat64);
  torch::Tensor in = torch::empty({5}, torch::kFloat64);
  std::vector<P2POp> ops{{P2POp::Send, out, (me + 1) % n, 7},
                         {P2POp::Recv, in, (me + n - 1) % n, 7}};
  world.batch_isend_irecv(ops);
  EXPECT_TRUE(torch::equal(in, torch::full({5}, double((me + n - 1) % n))));
  // Blocking send / recv between 0 and 1.
  torch::Tensor t = torch::arange(4, torch::kInt64) * (me + 1);
  if (me == 0) world.send(t, 1, 3);
  if (me == 1) {
    world.recv(t, 0, 3);
    EXPECT_TRUE(torch::equal(t, torch::arange(4, torch::kInt64)));
  }
  world.barrier();
}

TEST(Communicator, RefusesNonContiguousTensors) {
  Communicator world = Communicator::world(60);
  torch::Tensor t = torch::zeros({4, 4}).t();
  try {
    world.all_reduce(t);
    FAIL();
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("non-contiguous tensor refused"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("strides [1, 4]"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace ladder::parallel

// gtest under MPI: every rank runs every test; only rank 0 prints (every rank with
// LADDER_TEST_ALL_RANKS=1 in the environment, `mpirun -x LADDER_TEST_ALL_RANKS`), and the exit
// status is non-zero if any rank failed.
int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  ::testing::InitGoogleTest(&argc, argv);
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  if (rank != 0 && !std::getenv("LADDER_TEST_ALL_RANKS")) {
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
  }
  int failed = RUN_ALL_TESTS() != 0, any = 0;
  MPI_Allreduce(&failed, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  if (rank == 0 && any) std::fprintf(stderr, "a test failed on some rank\n");
  MPI_Finalize();
  return any;
}
