#!/usr/bin/env bash
# Train the default bundle (models/default) from the shared DFDC face crops and
# record its files in models/manifest.json. Needs ../shared/data/dfdc-faces
# (research data, not in this repository). Seeded: a rerun reproduces the
# metrics (embeddings are cached under ~/.cache/fakewatch; first run ~40 min
# of extraction on 2 cores, then ~3 min).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo run --release -p fakewatch-trainer -- fit \
    --config trainer/configs/default-dfdc.json --out models/default "$@"
python3 models/convert/record_bundle.py models/default
