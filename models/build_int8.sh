#!/usr/bin/env bash
# Quantize the default bundle to int8 (QDQ ONNX): models/facenet-int8.onnx and
# the bundle models/default-int8, calibrated on 128 faces of the default
# bundle's train split and measured on its test split. Needs
# ../shared/data/dfdc-faces (research data, not in this repository) and
# models/default. Deterministic: a rerun writes the same files (about 5 min on
# 2 cores; the fp32 test embeddings come from the cache of build_default.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo run --release -p fakewatch-trainer -- quantize models/default \
    --out models/default-int8 --backbone-out models/facenet-int8.onnx "$@"
python3 models/convert/record_bundle.py models/default-int8
