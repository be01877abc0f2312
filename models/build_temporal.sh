#!/usr/bin/env bash
# Train the per-track sequence model of models/default-temporal (issue 26): temporal
# self-blend fakes (flicker, stable, jump, mouth-only) of the 20 real talking-head clips of
# ../shared/data/media/talking-heads, their SDK track sequences (track-motion-v1) under
# models/default, a one-layer GRU over 16 steps (every 2nd frame) that does not read the
# frame logit (motion and appearance change only), and the fusion of its logit with the
# frame score fitted on out-of-fold logits (5 folds by clip); then record sequence.onnx in
# models/manifest.json. The bundle references models/default's files (nothing is copied).
# Needs ../shared (research data, not in this repository). Seeded and deterministic.
# Cost on the 2-core VM: ~15 min of extraction for the clips (cached under
# target/temporal-cache), ~6 min more for the 94 evaluation clips; seconds for the GRU.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo run --release -p fakewatch-trainer -- temporal \
    --real-clips ../shared/data/media/talking-heads --eval ../shared/data/media/generated \
    --bundle models/default --frames 48 --steps 16 --every 2 --seed 42 --ignore frame_logit \
    --out target/temporal-s42-motion --bundle-out models/default-temporal "$@"
python3 models/convert/record_bundle.py models/default-temporal models/build_temporal.sh
