"""Record a trained bundle's own model files in models/manifest.json.

Usage: python3 models/convert/record_bundle.py BUNDLE_DIR [SCRIPT]
e.g. python3 models/convert/record_bundle.py models/default models/build_default.sh
Standard library only. Reads the bundle's bundle.json (written by
`fakewatch-train fit` or `fakewatch-train quantize`) and adds one manifest
entry per file the bundle owns (files referenced from other bundles, such as
../facenet.onnx, already have their own entries). For an int8 bundle it also
records its quantized backbone (e.g. ../faceres-int8.onnx). SCRIPT is the
repository script that made the bundle (recorded as its command; default
models/build_default.sh, or models/build_int8.sh for an int8 bundle).
"""
import hashlib
import json
import os
import sys

here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
bundle_dir = os.path.abspath(sys.argv[1])
script = sys.argv[2] if len(sys.argv) > 2 else None
rel_dir = os.path.relpath(bundle_dir, here)
b = json.load(open(os.path.join(bundle_dir, "bundle.json")))
manifest_path = os.path.join(here, "manifest.json")
m = json.load(open(manifest_path))
training = b.get("training") or {}
quantized = "quantized_from" in training
fit_training = training.get("source_training", {}) if quantized else training
data = fit_training.get("dataset", {})
source = {
    "produced_by": "fakewatch-train fit (this repository)",
    "command": script or "models/build_default.sh",
    "config": fit_training,
    "data": data.get("path"),
    "data_terms": "DFDC terms, research-only; the data is not in this repository",
}
trained_by = "models/build_default.sh"
if quantized:
    # The script that trained the fp32 bundle, as recorded for its head or classifier.
    src_dir = os.path.join(rel_dir, training["quantized_from"]["path"])
    for f in ("head.onnx", "classifier.onnx"):
        rec = (m["models"].get(os.path.normpath(os.path.join(src_dir, f))) or {}).get("source") or {}
        if "command" in rec:
            trained_by = rec["command"]
            break
    source = {
        "produced_by": "fakewatch-train quantize (this repository)",
        "command": script or "models/build_int8.sh",
        "quantized_from": training["quantized_from"],
        "quantization": training["quantization"],
        "calibration_data": data.get("path"),
        "data_terms": "DFDC terms, research-only; the data is not in this repository",
        "trained_by": trained_by,
    }
feats = b["backbone"].get("features")
scored_dim = feats["dim"] if feats else b["backbone"]["dim"]
scored = (
    "the backbone's %d-d pooled multi-level features (raw; the standardisation learnt on the "
    "training split is inside this model)" % scored_dim
    if feats
    else "the backbone's L2-normalised embedding"
)
entries = {}
if b.get("head"):
    head_dim = b["head"]["dim"]
    entries[b["head"]["file"]] = {
        "role": "triplet head",
        "input": {"name": "embedding", "shape": ["N", scored_dim]},
        "outputs": {"head": ["N", head_dim]},
        "normalisation": "none: takes %s; output is L2-normalised" % scored,
    }
    entries[b["classifier"]["file"]] = {
        "role": "classifier (%s)" % b["classifier"]["kind"],
        "input": {"name": "features", "shape": ["N", head_dim]},
        "outputs": {"p_fake": ["N", 1]},
        "normalisation": "none: takes the head's output",
    }
else:
    entries[b["classifier"]["file"]] = {
        "role": "classifier (%s), no head" % b["classifier"]["kind"],
        "input": {"name": "features", "shape": ["N", scored_dim]},
        "outputs": {"p_fake": ["N", 1]},
        "normalisation": "none: takes %s" % scored,
    }
seq = b.get("sequence")
if seq:
    # A temporal bundle (fakewatch-train temporal --bundle-out): its own file is the sequence
    # model; its frame models belong to the frame bundle it references.
    st = training.get("sequence", {})
    source = {
        "produced_by": "fakewatch-train temporal (this repository)",
        "command": script or "models/build_temporal.sh",
        "config": st,
        "frame_bundle": training.get("frame_bundle"),
        "data": st.get("real_clips"),
        "data_terms": "talking-head clips of ../shared/data/media: research-only; not in this repository",
    }
    if seq["features"] == "face-crops-v1":
        s = seq["crop_size"]
        entries[seq["file"]] = {
            "role": "per-track sequence model (C3D: frame-difference stem, three 3-D convolutions over the track's face crops)",
            "input": {"name": "crops", "shape": [1, 3, seq["steps"], s, s], "features": seq["features"]},
            "outputs": {"logit": [1, 1]},
            "normalisation": "inside the graph: RGB bytes 0-255 as floats, x / 63.75 - 2 "
                             "(sdk/src/sequence.rs face_crop; trainer/src/c3d.rs)",
            "fusion": seq["fusion"],
        }
    else:
        entries[seq["file"]] = {
            "role": "per-track sequence model (one-layer GRU, ONNX GRU op, standardisation inside)",
            "input": {"name": "sequence", "shape": [1, seq["steps"], 6], "features": seq["features"]},
            "outputs": {"logit": [1, 1]},
            "normalisation": "none: takes the SDK's raw %s features (sdk/src/sequence.rs)" % seq["features"],
            "fusion": seq["fusion"],
        }
    for k in [k for k in entries if k != seq["file"]]:
        del entries[k]
licences = {}
def record_quantized(file, rec, spec):
    """The manifest entry of a quantized model file (a backbone or one of its branches)."""
    src_key = os.path.normpath(os.path.join(rel_dir, os.path.dirname(file), rec["source"]))
    src_entry = m["models"].get(src_key, {})
    if rec.get("weights_only"):
        role = "int8 QDQ weights only (%d-bit per-channel symmetric weights, float activations" % rec.get("weight_bits", 8)
    else:
        role = "int8 QDQ (%d-bit per-channel symmetric weights, calibrated activations" % rec.get("weight_bits", 7)
    if rec.get("kept_float"):
        role += "; kept float: " + ", ".join(rec["kept_float"])
    role += ")"
    entries[file] = {
        "role": role,
        "quantized_layers": {k: rec[k] for k in ("ops", "activations", "weight_bits", "kept_float", "weights_only") if k in rec},
        "layout": src_entry.get("layout", "NCHW"),
        "colour": "BGR" if spec.get("bgr") else "RGB",
        "normalisation": src_entry.get("normalisation", {"mean": spec["mean"], "scale": spec["scale"]}),
        "input": src_entry.get("input", {"shape": ["N"] + b["backbone"]["input"]}),
        "outputs": src_entry.get("outputs", {}),
        "quantized_from": {"file": src_key, "sha256": rec["source_sha256"]},
    }
    licences[file] = (
        src_entry.get("licence", "as its source model")
        + (
            "; weights quantized by this project (no calibration data)"
            if rec.get("weights_only")
            else "; quantized by this project (scales calibrated on DFDC faces: research-only use)"
        )
    )


if quantized:
    bb = b["backbone"]
    record_quantized(bb["file"], training["backbone"], bb)
    entries[bb["file"]]["role"] = "backbone, " + entries[bb["file"]]["role"]
    # Branches merged into the backbone at load (sdk pooling.rs), quantized the same way.
    for spec, rec in zip(bb.get("branches", []), training.get("branches", [])):
        record_quantized(spec["file"], rec, spec)
        entries[spec["file"]]["role"] = "backbone branch %s, %s" % (spec["prefix"], entries[spec["file"]]["role"])
for name in [n for n in entries if n.startswith("../") and n not in licences]:
    del entries[name]  # another bundle's file (e.g. ../default/classifier.onnx): recorded there
for name, e in entries.items():
    path = os.path.join(bundle_dir, name)
    data_bytes = open(path, "rb").read()
    e.update(
        {
            "source": source,
            "licence": licences.get(
                name,
                "MIT OR Apache-2.0 (weights made by this project); trained on DFDC data: research-only use",
            ),
            "sha256": hashlib.sha256(data_bytes).hexdigest(),
            "bytes": len(data_bytes),
        }
    )
    m["models"][os.path.normpath(os.path.join(rel_dir, name))] = e
# A file this bundle no longer has (a retrained bundle without a head) leaves the manifest.
for key in [k for k in m["models"] if os.path.dirname(k) == rel_dir]:
    if not os.path.exists(os.path.join(bundle_dir, os.path.basename(key))):
        del m["models"][key]
        print("dropped", key)
with open(manifest_path, "w") as f:
    json.dump(m, f, indent=1)
    f.write("\n")
print("recorded", ", ".join(os.path.normpath(os.path.join(rel_dir, n)) for n in entries))
