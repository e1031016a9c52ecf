#!/usr/bin/env bash
# From a fresh clone to a trained model: set up, prepare the bundled Brown corpus, train the quickstart
# recipe data-parallel on 2 ranks (one LibTorch thread each; about 2 minutes on 2 cores). Run it again
# and it continues or finds the run complete. RANKS=1 trains in one process.
set -euo pipefail
cd "$(dirname "$0")/.."
launch/setup.sh
if [[ ! -f data/brown/dataset.toml ]]; then
  build/ladder prep --input data/corpus/brown.txt.gz --tokenizer bytes --out data/brown
else
  echo "quickstart: data/brown is already prepared"
fi
ranks=${RANKS:-2}
launcher=()
if ((ranks > 1)); then
  launcher=(mpirun --oversubscribe -np "$ranks")
  [[ $(id -u) == 0 ]] && launcher+=(--allow-run-as-root)
fi
"${launcher[@]}" build/ladder train recipes/quickstart.toml --resume auto >/dev/null  # logs: stderr
build/ladder inspect runs/quickstart/trace.h5
build/ladder plot runs/quickstart --x tokens  # the loss curves: prints where the PNG is
