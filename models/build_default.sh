#!/usr/bin/env bash
# Train the default bundle (models/default: frozen faceres embedding + triplet
# head + logistic, trained on the DFDC crops' fakes and self-blended fakes) from
# the shared DFDC face crops and record its files in models/manifest.json.
# Needs ../shared/data/dfdc-faces (research data, not in this repository).
# Seeded: a rerun reproduces the metrics (embeddings and self-blends are cached
# under ~/.cache/fakewatch; first run ~25 min of extraction on 2 cores, then
# ~15 min with the paper's comparison rows).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo run --release -p fakewatch-trainer -- fit \
    --config trainer/configs/default-dfdc.json --out models/default "$@"
python3 models/convert/record_bundle.py models/default models/build_default.sh
