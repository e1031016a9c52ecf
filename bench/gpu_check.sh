#!/usr/bin/env bash
# The GPU check (issue 35), one script for a lent GPU machine, about 8 minutes: build only what the
# check uses, run the GPU tests and stop at the first failure, then time the training step in bf16
# at two GPT-2-like sizes (d_model 768 x 12 layers, ~135M parameters; 1024 x 24, ~370M; vocabulary
# 32768, seq 1024, batch 16) in each of ladder's variants against PyTorch eager and torch.compile,
# on the same GPU in the same run.
#
#   GPU tests   kernels/cuda.h's kernels against their composites (test_kernels CudaKernels.*), then
#               the sync-free step under c10::cuda's sync-debug mode set to error, with the
#               composites and with the fused CUDA kernels (bench_train_step --sync-debug 1)
#   variants    composite    LibTorch's operators, the host-checked step
#               sync-free    the same operators, train.sync_free_step
#               fused        train.fused_cuda_kernels + train.sync_free_step
#               fused+graph  the same, replayed from a CUDA graph (train.cuda_graph)
#   table       tokens/s, MFU against the datasheet peak (PEAK_TFLOPS, default the H100 SXM's dense
#               bf16 989 TFLOP/s) and against the measured matmul peak, ratio to torch.compile, peak
#               GPU memory; also as CSV (model, variant, ladder_tok_s, eager_tok_s, compile_tok_s,
#               mfu, peak_gb) in $OUT/gpu-<device>.csv, to commit as bench/results/gpu-<device>.csv
#
#   bench/gpu_check.sh                       # with launch/setup.sh's pinned LibTorch
#   TORCH_DIR=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')/Torch \
#     bench/gpu_check.sh                     # a machine's own LibTorch (LADDER_ALLOW_OTHER_TORCH)
# The training tests on the GPU follow the kernel tests (test_training's Training.OnAGpu*): the graph
# and the fused kernels against the eager step, and `ladder train` under LADDER_SYNC_DEBUG=1.
# Environment: TORCH_DIR, CUDA_KERNELS_LIB (a libladder_cuda_kernels.a for a machine without nvcc),
# BUILD_DIR (build-gpu), JOBS (nproc), PEAK_TFLOPS (989), OUT (results
# folder, default $BUILD_DIR), STEPS (15), CMAKE_ARGS (extra configure flags).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD_DIR:-build-gpu}
out=${OUT:-$build}
steps=${STEPS:-15}
peak_tflops=${PEAK_TFLOPS:-989}
mkdir -p "$out"
start=$SECONDS
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -n 1)
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
device=$(tr -c 'A-Za-z0-9\n' '-' <<<"$gpu" | tr 'A-Z' 'a-z' | sed 's/--*/-/g; s/-$//')

args=(-G Ninja -DCMAKE_BUILD_TYPE=Release -DLADDER_CCACHE=OFF -DCMAKE_POLICY_VERSION_MINIMUM=3.5)
[[ -n ${TORCH_DIR:-} ]] && args+=(-DTorch_DIR="$TORCH_DIR" -DLADDER_ALLOW_OTHER_TORCH=ON)
# Without nvcc there, the kernels built here (build/kernels/libladder_cuda_kernels.a, carried along).
[[ -n ${CUDA_KERNELS_LIB:-} ]] && args+=(-DLADDER_CUDA_KERNELS_PREBUILT="$(realpath "$CUDA_KERNELS_LIB")")
# shellcheck disable=SC2086
cmake -S . -B "$build" "${args[@]}" ${CMAKE_ARGS:-} >"$out/configure.log"
grep -q 'ladder: no nvcc found' "$out/configure.log" &&
  echo "gpu_check: no nvcc and no CUDA_KERNELS_LIB: no CUDA kernels (the fused variants are refused)"
cmake --build "$build" -j "${JOBS:-$(nproc)}" --target test_kernels test_training ladder \
  bench_train_step
  >"$out/build.log"
python=$(awk -F= '/^LADDER_PYTHON:/ {print $2}' "$build/CMakeCache.txt")
echo "gpu_check: built in $((SECONDS - start)) s"

echo "== GPU tests"
"$build/tests/test_kernels" --gtest_filter='CudaKernels.*' --gtest_brief=1 \
  >"$out/test_cuda_kernels.log" 2>&1 || { tail -n 40 "$out/test_cuda_kernels.log"; exit 1; }
tail -n 3 "$out/test_cuda_kernels.log"
"$build/tests/test_training" --gtest_filter='Training.OnAGpu*' --gtest_brief=1 \
  >"$out/test_gpu_training.log" 2>&1 || { tail -n 40 "$out/test_gpu_training.log"; exit 1; }
tail -n 3 "$out/test_gpu_training.log"
small=(--d-model 256 --layers 2 --heads 4 --seq 256 --batch 4 --vocab 32768 --steps 3
       --device cuda --precision bf16 --threads 4 --sync-free 1 --sync-debug 1)
for kernels in 0 1; do
  for graph in 0 1; do
    if ! "$build/bench/bench_train_step" "${small[@]}" --cuda-kernels "$kernels" \
        --cuda-graph "$graph" >"$out/sync_debug_${kernels}_$graph.log" 2>&1; then
      echo "gpu_check: the sync-free step waited for the device (cuda kernels $kernels, graph $graph):"
      tail -n 20 "$out/sync_debug_${kernels}_$graph.log"
      exit 1
    fi
  done
done
echo "sync-free step under sync-debug mode (error): passed, composites and fused kernels, eager and graph"

echo "== training step, bf16, cuda ($steps steps each)"
csv="$out/gpu-$device.csv"
echo "model,variant,ladder_tok_s,eager_tok_s,compile_tok_s,mfu,peak_gb" >"$csv"
table="$out/table.md"
{
  echo "| model | variant | ladder tok/s | eager tok/s | compile tok/s | × compile | MFU (datasheet) | MFU (measured peak) | peak GB |"
  echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
} >"$table"
for shape in "135M 768 12" "370M 1024 24"; do
  read -r model d layers <<<"$shape"
  common=(--d-model "$d" --layers "$layers" --heads $((d / 64)) --seq 1024 --batch 16
          --vocab 32768 --steps "$steps" --device cuda --precision bf16 --threads 8)
  eager=$("$python" bench/train_step.py "${common[@]}" | awk '/^RESULT/ {print $3}')
  compiled=$("$python" bench/train_step.py "${common[@]}" --compile | awk '/^RESULT/ {print $3}')
  for variant in composite sync-free fused fused+graph; do
    case $variant in
      composite) flags=(--sync-free 0 --cuda-kernels 0) ;;
      sync-free) flags=(--sync-free 1 --cuda-kernels 0) ;;
      fused) flags=(--sync-free 1 --cuda-kernels 1) ;;
      fused+graph) flags=(--sync-free 1 --cuda-kernels 1 --cuda-graph 1) ;;
    esac
    log="$out/step_${model}_${variant/+/_}.log"
    "$build/bench/bench_train_step" "${common[@]}" "${flags[@]}" >"$log" 2>&1 ||
      { echo "gpu_check: $model $variant failed:"; tail -n 5 "$log"; continue; }
    # "ladder  step S s, T tokens/s, G model GFLOP/s, MFU M% of P GFLOP/s (...)"
    read -r tok gflops measured_peak < <(sed -n 's/^ladder  step [0-9.]* s, \([0-9.]*\) tokens\/s, \([0-9.]*\) model GFLOP\/s, MFU [0-9.]*% of \([0-9.]*\) GFLOP\/s.*/\1 \2 \3/p' "$log")
    peak_mb=$(sed -n 's/^ladder  peak GPU memory allocated \([0-9.]*\) MB/\1/p' "$log")
    awk -v m="$model" -v v="$variant" -v t="$tok" -v e="$eager" -v c="$compiled" -v g="$gflops" \
        -v p="$measured_peak" -v d="$peak_tflops" -v mb="$peak_mb" -v csv="$csv" -v md="$table" '
      BEGIN {
        mfu = g / (d * 1e3); gb = mb / 1024
        printf "%s,%s,%.0f,%.0f,%.0f,%.4f,%.2f\n", m, v, t, e, c, mfu, gb >> csv
        printf "| %s | %s | %.0f | %.0f | %.0f | %.2f | %.1f%% | %.1f%% | %.1f |\n", m, v, t, e, c,
               t / c, 100 * mfu, 100 * g / p, gb >> md
      }'
  done
done
cat "$table"
echo "gpu_check: done in $((SECONDS - start)) s; CSV $csv"
