#!/usr/bin/env bash
# Installs the Debian 12 packages ladder needs (only those missing), then configures and builds it into
# build/. Idempotent: a second run installs nothing and rebuilds only what changed.
#
#   launch/setup.sh              packages + build
#   launch/setup.sh --no-build   packages only
# Environment: BUILD_DIR (default build), LADDER_JOBS (default 2), CMAKE_ARGS (extra configure flags).
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  build-essential cmake ninja-build ccache pkg-config
  libtorch-dev libopenblas0-openmp       # LibTorch 1.13 (CPU); OpenBLAS, or matmuls run ~30x slower
  openmpi-bin libopenmpi-dev libhdf5-openmpi-dev
  libtomlplusplus-dev libspdlog-dev libcli11-dev nlohmann-json3-dev
  libsentencepiece-dev libgtest-dev zlib1g-dev
  python3-h5py                           # tests read traces and checkpoints as users do
  gnuplot-nox                            # `ladder fit` plots (optional: without it, data files only)
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  sudo=""
  [[ $(id -u) -eq 0 ]] || sudo="sudo"
  echo "setup: installing ${missing[*]}"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# libopenblas0-openmp registers itself as the preferred BLAS; say which one is active.
blas=$(readlink -f /usr/lib/x86_64-linux-gnu/libblas.so.3 2>/dev/null || true)
case "$blas" in
  *openblas*) ;;
  *) echo "setup: warning: the active BLAS is $blas, not OpenBLAS; LibTorch matmuls will be slow." \
       "Fix: update-alternatives --config libblas.so.3-x86_64-linux-gnu" >&2 ;;
esac

[[ "${1:-}" == "--no-build" ]] && exit 0

build_dir=${BUILD_DIR:-build}
if [[ ! -f "$build_dir/build.ninja" ]]; then
  # shellcheck disable=SC2086
  cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release ${CMAKE_ARGS:-}
fi
cmake --build "$build_dir" -j "${LADDER_JOBS:-2}"
echo "setup: built $build_dir/ladder"
