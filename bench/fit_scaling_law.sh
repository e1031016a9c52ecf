#!/usr/bin/env bash
# `ladder fit` at the size the fitter must handle in under a minute: POINTS (default 1000) points
# drawn from the Chinchilla law (Hoffmann et al. 2022's fit) with 1% log-normal noise, 2% of them
# outliers 30% too high, fitted with BOOTSTRAP (default 1000) resamples. Prints the wall time and
# the recovered parameters against the truth (E 1.69, A 406.4, B 410.7, alpha 0.34, beta 0.28).
#   bench/fit_scaling_law.sh              # POINTS=1000 BOOTSTRAP=1000
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD_DIR:-build}
points=${POINTS:-1000} bootstrap=${BOOTSTRAP:-1000}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
# Box-Muller normals from awk's seeded generator: the same points every run.
awk -v n="$points" 'BEGIN {
  srand(1); print "N,D,loss"
  for (i = 0; i < n; i++) {
    N = 10 ^ (7 + 3 * rand()); D = 10 ^ (9 + 3 * rand())
    z = sqrt(-2 * log(1 - rand())) * cos(6.283185307179586 * rand())
    L = (1.69 + 406.4 / N ^ 0.34 + 410.7 / D ^ 0.28) * exp(0.01 * z)
    if (rand() < 0.02) L *= 1.3
    printf "%.10g,%.10g,%.10g\n", N, D, L
  }
}' >"$out/points.csv"
start=$(date +%s.%N)
"$build"/ladder fit "$out/points.csv" --bootstrap "$bootstrap" --out "$out/fit" --no-plots
end=$(date +%s.%N)
awk -v s="$start" -v e="$end" -v n="$points" -v b="$bootstrap" \
  'BEGIN {printf "\n%d points, %d bootstrap resamples: %.1f s wall\n", n, b, e - s}'
