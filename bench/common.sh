# Sourced by the training benchmarks (dp_scaling.sh, tp_comm.sh): the build, the virtual
# environment's Python (h5py reads the traces), the bundled corpus prepared once, mpirun with the
# flags this machine needs, and a scratch folder removed on exit.
cd "$(dirname "${BASH_SOURCE[0]}")/.."
build=${BUILD_DIR:-build}
python=${LADDER_VENV:-$HOME/.cache/ladder/torch-2.15.0}/bin/python3
"$python" -c 'import h5py' 2>/dev/null || {
  echo "$(basename "$0"): needs $python with h5py; run launch/setup.sh" >&2
  exit 2
}
[[ -f data/brown/dataset.toml ]] ||
  "$build"/ladder prep --input data/corpus/brown.txt.gz --tokenizer bytes --out data/brown
mpirun=(mpirun --oversubscribe)
[[ $(id -u) == 0 ]] && mpirun+=(--allow-run-as-root)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
