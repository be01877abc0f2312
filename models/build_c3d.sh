#!/usr/bin/env bash
# The C3D baseline of issue 26: a 3-D convolution network over 16 face
# crops of 64 × 64 (every 2nd frame) of each track, trained on the temporal
# fakes made from the real talking heads (`fakewatch-train temporal --model
# c3d`), with its fusion rule fitted on out-of-fold logits. The bundle keeps
# models/default's files by relative path and adds only sequence.onnx.
# Two folds and 12 epochs keep the three trainings (two out-of-fold, one
# final) to about 10 minutes on 2 cores (crop extraction: ~15 min more the
# first time, cached under target/temporal-cache). The generated clips are
# measured by scanning the written bundle (bench/generalisation.py), the
# product's own path, so they are not read here. CPU only; seed 42. Results: bench/results-2026-12-05-temporal.md.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo run --release -p fakewatch-trainer -- temporal \
    --real-clips ../shared/data/media/talking-heads \
    --bundle models/default --frames 48 --steps 16 --every 2 --seed 42 \
    --model c3d --crop-size 64 --c3d-epochs 12 --folds 2 \
    --out target/temporal-s42-c3d --bundle-out models/default-c3d "$@"
python3 models/convert/record_bundle.py models/default-c3d models/build_c3d.sh
