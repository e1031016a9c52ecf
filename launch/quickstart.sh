#!/usr/bin/env bash
# From a fresh clone to a trained model: set up, prepare the bundled Brown corpus, train the quickstart
# recipe (about 3 minutes on 2 cores). Run it again and it continues or finds the run complete.
set -euo pipefail
cd "$(dirname "$0")/.."
launch/setup.sh
if [[ ! -f data/brown/dataset.toml ]]; then
  build/ladder prep --input data/corpus/brown.txt.gz --tokenizer bytes --out data/brown
else
  echo "quickstart: data/brown is already prepared"
fi
build/ladder train recipes/quickstart.toml --resume auto > /dev/null  # the log goes to stderr
build/ladder inspect runs/quickstart/trace.h5
