#!/usr/bin/env bash
# From a fresh clone to a trained model: set up, prepare the bundled Brown corpus, run the quickstart recipe.
set -euo pipefail
cd "$(dirname "$0")/.."
launch/setup.sh
if [[ ! -f data/brown/dataset.toml ]]; then
  build/ladder prep --input data/corpus/brown.txt.gz --tokenizer bytes --out data/brown
else
  echo "quickstart: data/brown is already prepared"
fi
# The training loop is not built yet: validate the recipe and say so.
build/ladder train recipes/quickstart.toml --check
echo "quickstart: the recipe is valid and the data is ready; training itself is not built yet" \
     "(see README.md, Status)."
