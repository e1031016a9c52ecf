#!/usr/bin/env bash
# `ladder prep` on a generated multi-GB JSONL.zst: tokens/s and peak memory with the bytes
# tokenizer and with the shipped byte-level BPE (data/tokenizers/brown-bpe-4096.json).
#   bench/prep_throughput.sh [GB of text, default 2] [threads, default all cores]
# The corpus is the bundled Brown documents repeated, each copy's documents numbered so that no two
# are equal, as JSONL lines {"text": ..., "source": ...}, zstd-compressed in many frames (zstd -T0)
# the way FineWeb-style dumps ship. Memory must not grow with the input (prep streams it).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
build=${BUILD_DIR:-build}
gb=${1:-2}
threads=${2:-$(nproc)}
command -v zstd > /dev/null || { echo "prep_throughput.sh: needs zstd (apt install zstd)" >&2; exit 2; }
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

python3 - "$gb" <<'PY' | zstd -q -T0 -3 -o "$scratch/corpus.jsonl.zst"
import gzip, json, sys
target = float(sys.argv[1]) * 1e9
docs = gzip.open("data/corpus/brown.txt.gz", "rt", encoding="utf-8").read().split("\n\n")
docs = [d.strip("\n") + "\n" for d in docs if d.strip()]
written, copy = 0, 0
out = sys.stdout
while written < target:
    for i, d in enumerate(docs):
        text = f"[copy {copy} document {i}]\n" + d
        out.write(json.dumps({"text": text, "source": "brown"}) + "\n")
        written += len(text.encode("utf-8"))
    copy += 1
PY
zst=$scratch/corpus.jsonl.zst
printf 'input: %.2f GB of text as %.2f GB of JSONL.zst; %s threads; %s\n' "$gb" \
  "$(echo "$(stat -c %s "$zst") / 1000000000" | bc -l)" "$threads" \
  "$(lscpu | sed -n 's/^Model name: *//p')"
# The binary's own footprint (LibTorch and the CUDA libraries it maps), for scale.
/usr/bin/time -f '%M' -o "$scratch/time" "$build"/ladder prep --help > /dev/null
printf 'peak RSS of `ladder prep --help` (the libraries alone): %.0f MB\n' \
  "$(echo "$(cat "$scratch/time") / 1024" | bc -l)"
printf '%-10s %14s %10s %12s %10s %12s\n' tokenizer tokens seconds "M tokens/s" "MB/s" "peak RSS MB"
for tokenizer in bytes hf; do
  args=(--tokenizer "$tokenizer")
  [[ $tokenizer == hf ]] && args+=(--tokenizer-file data/tokenizers/brown-bpe-4096.json)
  rm -rf "$scratch/ds"
  /usr/bin/time -f '%e %M' -o "$scratch/time" "$build"/ladder prep --input "$zst" \
    --out "$scratch/ds" --threads "$threads" "${args[@]}" > "$scratch/report" 2> "$scratch/log"
  read -r seconds rss_kb < "$scratch/time"
  tokens=$(awk '/^train|^val/ {sum += $4} END {print sum}' "$scratch/report")
  text_mb=$(awk '/^input/ {print $2}' "$scratch/report")
  printf '%-10s %14s %10.1f %12.2f %10.1f %12.0f\n' "$tokenizer" "$tokens" "$seconds" \
    "$(echo "$tokens / $seconds / 1000000" | bc -l)" "$(echo "$text_mb / $seconds" | bc -l)" \
    "$(echo "$rss_kb / 1024" | bc -l)"
done
