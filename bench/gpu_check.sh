#!/usr/bin/env bash
# The GPU checks, on a machine with an NVIDIA GPU: configure and build (CUDA LibTorch, NCCL backend),
# run the whole test suite there (the CUDA training test then trains on the GPU), and time the
# training step in bf16 on the GPU at two GPT-2-like sizes (d_model 768 x 12 layers, ~135M
# parameters; d_model 1024 x 24 layers, ~370M; vocabulary 32768, seq 1024, batch 16) against PyTorch
# eager and torch.compile on the same machine. MFU is stated against the H100 SXM's dense bf16
# datasheet peak (989 TFLOP/s) and against a measured 8192^3 bf16 matmul.
#
#   bench/gpu_check.sh                       # with launch/setup.sh's pinned LibTorch
#   TORCH_DIR=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')/Torch \
#     bench/gpu_check.sh                     # a machine's own LibTorch (LADDER_ALLOW_OTHER_TORCH)
# Environment: TORCH_DIR, BUILD_DIR (build-gpu), JOBS (nproc), PEAK_TFLOPS (989), OUT (log folder),
# CMAKE_ARGS (extra configure flags).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD_DIR:-build-gpu}
out=${OUT:-$build}
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
args=(-G Ninja -DCMAKE_BUILD_TYPE=Release -DLADDER_CCACHE=OFF -DCMAKE_POLICY_VERSION_MINIMUM=3.5)
if [[ -n ${TORCH_DIR:-} ]]; then
  args+=(-DTorch_DIR="$TORCH_DIR" -DLADDER_ALLOW_OTHER_TORCH=ON)
fi
# shellcheck disable=SC2086
cmake -S . -B "$build" "${args[@]}" ${CMAKE_ARGS:-} >"$out/configure.log"
cmake --build "$build" -j "${JOBS:-$(nproc)}" >"$out/build.log"
python=$(awk -F= '/^LADDER_PYTHON:/ {print $2}' "$build/CMakeCache.txt")

echo "== tests"
ctest --test-dir "$build" -j 8 --output-on-failure >"$out/ctest.log" 2>&1 || true
tail -n 8 "$out/ctest.log"

echo "== training step, bf16, cuda"
for shape in "768 12" "1024 24"; do
  read -r d layers <<<"$shape"
  common=(--d-model "$d" --layers "$layers" --heads $((d / 64)) --seq 1024 --batch 16
          --vocab 32768 --steps 20 --device cuda --precision bf16 --threads 8)
  "$build/bench/bench_train_step" "${common[@]}" --peak-tflops "${PEAK_TFLOPS:-989}"
  "$build/bench/bench_train_step" "${common[@]}" | grep 'MFU'
  echo "sync-free update (train.sync_free_step):"
  "$build/bench/bench_train_step" "${common[@]}" --sync-free 1 | grep 'MFU'
  "$python" bench/train_step.py "${common[@]}" | grep '^python'
  "$python" bench/train_step.py "${common[@]}" --compile | grep '^python'
done
