#!/usr/bin/env bash
# Installs the Debian 12 packages ladder needs (only those missing) and the pinned LibTorch (PyPI's
# torch wheel, in a virtual environment outside the clone), then configures and builds ladder into
# build/. Idempotent: a second run installs nothing and rebuilds only what changed.
#
#   launch/setup.sh              packages + build
#   launch/setup.sh --no-build   packages only
# Environment: BUILD_DIR (default build), LADDER_JOBS (default 2), CMAKE_ARGS (extra configure flags),
# LADDER_VENV (default ~/.cache/ladder/torch-2.15.0).
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  build-essential cmake ninja-build ccache pkg-config
  python3-venv                           # the virtual environment that holds the pinned LibTorch
  openmpi-bin libopenmpi-dev libhdf5-openmpi-dev
  libtomlplusplus-dev libspdlog-dev libcli11-dev nlohmann-json3-dev
  libsentencepiece-dev libgtest-dev zlib1g-dev
  libonig-dev libutf8proc-dev libzstd-dev   # tokenizer.json files (regexes, normalization), .zst inputs
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

# The one LibTorch: PyPI's torch wheel, pinned, in a virtual environment outside the clone (keyed by
# the version, reused when present). It also holds the Python side: PyTorch for the comparison
# benchmarks, h5py and numpy to read outputs as users do, transformers (with sentencepiece and
# protobuf for SentencePiece tokenizers) to load what `ladder export --format hf` writes, and
# pyarrow (below).
torch_version=2.15.0
transformers_version=5.25.0
venv=${LADDER_VENV:-$HOME/.cache/ladder/torch-$torch_version}
if ! "$venv/bin/python3" -c "import torch, h5py, numpy
assert torch.__version__.split('+')[0] == '$torch_version'" 2>/dev/null; then
  echo "setup: installing torch==$torch_version, h5py and numpy into $venv (about 5 GB, once)"
  /usr/bin/python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet "torch==$torch_version" h5py numpy
fi
if ! "$venv/bin/python3" -c "import transformers, sentencepiece, google.protobuf
assert transformers.__version__ == '$transformers_version'" 2>/dev/null; then
  echo "setup: installing transformers==$transformers_version, sentencepiece and protobuf into $venv"
  "$venv/bin/pip" install --quiet "transformers==$transformers_version" sentencepiece==0.2.3 \
    protobuf==7.36.2
fi
# pyarrow: the Arrow and Parquet C++ libraries (and headers) that `ladder prep` reads Parquet
# inputs through (data/parquet_module.h); CMake finds them in the environment.
pyarrow_version=26.0.1
if ! "$venv/bin/python3" -c "import pyarrow
assert pyarrow.__version__ == '$pyarrow_version'" 2>/dev/null; then
  echo "setup: installing pyarrow==$pyarrow_version into $venv"
  "$venv/bin/pip" install --quiet "pyarrow==$pyarrow_version"
fi

[[ "${1:-}" == "--no-build" ]] && exit 0

build_dir=${BUILD_DIR:-build}
if [[ ! -f "$build_dir/build.ninja" ]]; then
  # shellcheck disable=SC2086
  cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release -DLADDER_VENV="$venv" ${CMAKE_ARGS:-}
fi
cmake --build "$build_dir" -j "${LADDER_JOBS:-2}"
echo "setup: built $build_dir/ladder"
