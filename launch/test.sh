#!/usr/bin/env bash
# Set up, build, and run every test (unit, CLI, and the multi-rank ones under mpirun) with ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
launch/setup.sh
build_dir=${BUILD_DIR:-build}
# Multi-rank tests are marked RUN_SERIAL; the rest share the two cores.
ctest --test-dir "$build_dir" --output-on-failure -j "${LADDER_JOBS:-2}" "$@"
