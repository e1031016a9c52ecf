// The process mesh (DESIGN.md "Process mesh"): world = islands x dp x pp x tp, tp varying fastest,
// so
//   world rank = ((island * dp + dp_rank) * pp + pp_rank) * tp + tp_rank.
// Each axis has a communicator over the ranks that differ only in that coordinate; `island` joins
// the ranks with the same (dp, pp, tp) coordinate across DiLoCo islands, and `replica` is one whole
// island.
//
// Expert parallelism (ep) is carved out of dp: consecutive groups of ep dp ranks (`ep`) hold all
// experts between them, and the dp / ep ranks with the same place in their groups (`expert_dp`)
// hold the same experts and reduce their gradients together.
#pragma once

#include <memory>

#include "parallel/communicator.h"

namespace ladder::parallel {

struct MeshShape {
  int tp = 1, pp = 1, dp = 1, islands = 1;
  int ep = 1;  // divides dp
  int size() const { return tp * pp * dp * islands; }
};

struct MeshCoord {
  int tp = 0, pp = 0, dp = 0, island = 0;
  int ep = 0;  // dp % ep: the rank's place in its expert-parallel group
};

// The coordinates of a world rank (pure arithmetic, also used by tests).
MeshCoord mesh_coord(const MeshShape& shape, int world_rank);

class ProcessMesh {
 public:
  // Collective over `world`. Throws ladder::Error when the shape does not multiply to the world
  // size.
  ProcessMesh(const Communicator& world, const MeshShape& shape);

  const MeshShape& shape() const { return shape_; }
  const MeshCoord& coord() const { return coord_; }
  const Communicator& tp() const { return *tp_; }
  const Communicator& pp() const { return *pp_; }
  const Communicator& dp() const { return *dp_; }
  const Communicator& island() const { return *island_; }
  const Communicator& replica() const { return *replica_; }
  const Communicator& ep() const { return *ep_; }
  const Communicator& expert_dp() const { return *expert_dp_; }
  // The first and last pipeline stages of this rank's pipeline (same island, dp and tp
  // coordinates), which both hold a tied embedding; on the stages between, those stages (a group
  // never used).
  const Communicator& pipeline_ends() const { return *pipeline_ends_; }

 private:
  MeshShape shape_;
  MeshCoord coord_;
  std::unique_ptr<Communicator> tp_, pp_, dp_, island_, replica_, pipeline_ends_, ep_, expert_dp_;
};

}  // namespace ladder::parallel
