#!/usr/bin/env bash
# Train the default bundle (models/default: frozen faceres with EfficientNet-Lite0
# merged in as a branch, the spatial mean / max / std of faceres' conv_pw_3..13
# and Lite0's stage 3-7 + head activations pooled into 14 904-d features,
# standardised, and an L-BFGS logistic classifier whose L2 is chosen on the
# validation split; trained on the DFDC crops' fakes and self-blended fakes;
# perception: trainer/configs/perception/faceres-lite0-stats) from the shared
# DFDC face crops and record its files in models/manifest.json.
# Needs ../shared/data/dfdc-faces (research data, not in this repository).
# Seeded and deterministic: a rerun reproduces the metrics (features and
# self-blends are cached under ~/.cache/fakewatch; first run ~11 min of
# extraction on 2 cores, then ~6 min for the fit).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo run --release -p fakewatch-trainer -- fit \
    --config trainer/configs/default-dfdc.json --out models/default "$@"
python3 models/convert/record_bundle.py models/default models/build_default.sh
