"""Record a trained bundle's own model files in models/manifest.json.

Usage: python3 models/convert/record_bundle.py models/default
Standard library only. Reads the bundle's bundle.json (written by
`fakewatch-train fit`) and adds one manifest entry per file the bundle owns
(files referenced from other bundles, such as ../facenet.onnx, already have
their own entries).
"""
import hashlib
import json
import os
import sys

here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
bundle_dir = os.path.abspath(sys.argv[1])
rel_dir = os.path.relpath(bundle_dir, here)
b = json.load(open(os.path.join(bundle_dir, "bundle.json")))
manifest_path = os.path.join(here, "manifest.json")
m = json.load(open(manifest_path))
training = b.get("training") or {}
data = training.get("dataset", {})
source = {
    "produced_by": "fakewatch-train fit (this repository)",
    "command": "models/build_default.sh",
    "config": training,
    "data": data.get("path"),
    "data_terms": "DFDC terms, research-only; the data is not in this repository",
}
head_dim = b["head"]["dim"]
entries = {
    b["head"]["file"]: {
        "role": "triplet head",
        "input": {"name": "embedding", "shape": ["N", b["backbone"]["dim"]]},
        "outputs": {"head": ["N", head_dim]},
        "normalisation": "none: takes the backbone's L2-normalised embedding; output is L2-normalised",
    },
    b["classifier"]["file"]: {
        "role": "classifier (%s)" % b["classifier"]["kind"],
        "input": {"name": "features", "shape": ["N", head_dim]},
        "outputs": {"p_fake": ["N", 1]},
        "normalisation": "none: takes the head's output",
    },
}
for name, e in entries.items():
    path = os.path.join(bundle_dir, name)
    data_bytes = open(path, "rb").read()
    e.update(
        {
            "source": source,
            "licence": "MIT OR Apache-2.0 (weights made by this project); trained on DFDC data: research-only use",
            "sha256": hashlib.sha256(data_bytes).hexdigest(),
            "bytes": len(data_bytes),
        }
    )
    m["models"][os.path.join(rel_dir, name)] = e
with open(manifest_path, "w") as f:
    json.dump(m, f, indent=1)
    f.write("\n")
print("recorded", ", ".join(os.path.join(rel_dir, n) for n in entries))
