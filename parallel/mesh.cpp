#include "parallel/mesh.h"

#include "core/error.h"

namespace ladder::parallel {

MeshCoord mesh_coord(const MeshShape& s, int r) {
  MeshCoord c;
  c.tp = r % s.tp;
  c.pp = (r / s.tp) % s.pp;
  c.dp = (r / (s.tp * s.pp)) % s.dp;
  c.island = r / (s.tp * s.pp * s.dp);
  c.ep = c.dp % s.ep;
  return c;
}

ProcessMesh::ProcessMesh(const Communicator& world, const MeshShape& shape) : shape_(shape) {
  if (shape.size() != world.size())
    throw Error("parallel", "tp x pp x dp x islands = " + std::to_string(shape.tp) + " x " +
                                std::to_string(shape.pp) + " x " + std::to_string(shape.dp) +
                                " x " + std::to_string(shape.islands) + " = " +
                                std::to_string(shape.size()) + ", but the job has " +
                                std::to_string(world.size()) + " ranks");
  if (shape.ep < 1 || shape.dp % shape.ep != 0)
    throw Error("parallel", "ep = " + std::to_string(shape.ep) +
                                " must divide dp = " + std::to_string(shape.dp));
  coord_ = mesh_coord(shape, world.rank());
  const auto& c = coord_;
  const auto& s = shape_;
  // Color: the coordinates the group shares, flattened; key: the coordinate along the group's axis.
  tp_ = world.split((c.island * s.dp + c.dp) * s.pp + c.pp, c.tp, "tp");
  pp_ = world.split((c.island * s.dp + c.dp) * s.tp + c.tp, c.pp, "pp");
  dp_ = world.split((c.island * s.pp + c.pp) * s.tp + c.tp, c.dp, "dp");
  island_ = world.split((c.dp * s.pp + c.pp) * s.tp + c.tp, c.island, "island");
  replica_ = world.split(c.island, world.rank(), "replica");
  // Within this rank's dp group: its block of ep consecutive ranks, and the ranks at its place.
  ep_ = dp_->split(c.dp / s.ep, c.ep, "ep");
  expert_dp_ = dp_->split(c.ep, c.dp / s.ep, "expert_dp");
  const bool end = c.pp == 0 || c.pp == s.pp - 1;
  pipeline_ends_ =
      world.split((((c.island * s.dp + c.dp) * s.tp + c.tp) * 2) + (end ? 0 : 1), c.pp, "pp_ends");
}

}  // namespace ladder::parallel
