#!/usr/bin/env bash
# Quantize a bundle to int8 (QDQ ONNX), calibrated on 128 faces of its train
# split (the head; a weights-only backbone needs none) and measured on its test
# split, and record the files in models/manifest.json:
#   models/build_int8.sh          models/default -> models/default-int8 + models/faceres-int8.onnx
#                                 + models/efficientnet_lite0-int8.onnx (its Lite0 branch)
#   models/build_int8.sh paper    models/paper-facenet -> models/paper-facenet-int8 + models/facenet-int8.onnx
# Needs ../shared/data/dfdc-faces (research data, not in this repository) and
# the fp32 bundle. Deterministic: a rerun writes the same files (about 5 min on
# 2 cores; the fp32 test embeddings come from the cache of the build script).
set -euo pipefail
cd "$(dirname "$0")/.."
# faceres keeps 8-bit weights but float activations, and its first depthwise
# convolution float: quantizing that one layer alone drops the embedding cosine
# to fp32 from 1.0 to 0.84, and per-tensor activations cost more (cosine 0.875
# with everything quantized, 0.993 with this plan; see README "int8").
case "${1:-default}" in
  default) src=models/default out=models/default-int8 backbone=models/faceres-int8.onnx
           plan=(--weights-only --keep-float conv_dw_1/depthwise) ;;
  paper) src=models/paper-facenet out=models/paper-facenet-int8 backbone=models/facenet-int8.onnx
         plan=() ;;
  *) echo "usage: $0 [default|paper] [quantize options]" >&2; exit 2 ;;
esac
[ $# -gt 0 ] && shift
cargo run --release -p fakewatch-trainer -- quantize "$src" \
    --out "$out" --backbone-out "$backbone" "${plan[@]}" "$@"
python3 models/convert/record_bundle.py "$out" models/build_int8.sh
