"""Check an exported EfficientNet-Lite ONNX against the package's own forward pass.

Reads the .npz that efficientnet_lite_to_onnx.py wrote (input, embedding, stage1..7 pooled)
and runs the ONNX file with onnxruntime, with the stage tensors exposed as extra outputs.
Fails when any value differs by more than --tol.
"""

import argparse
import sys

import numpy as np
import onnx
import onnxruntime as ort


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--reference", required=True)
    ap.add_argument("--tol", type=float, default=1e-4)
    a = ap.parse_args()
    ref = np.load(a.reference)
    m = onnx.load(a.model)
    stages = sorted(k for k in ref.files if k.startswith("stage")) + ["head"]
    for s in stages:
        m.graph.output.extend([onnx.helper.make_tensor_value_info(s, onnx.TensorProto.FLOAT, None)])
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    out = sess.run(["embedding"] + stages, {"input": ref["input"]})
    worst = 0.0
    for name, got in zip(["embedding"] + stages, out):
        if got.ndim == 4:
            got = got.mean(axis=(2, 3))
        d = float(np.abs(got - ref[name]).max())
        worst = max(worst, d)
        print(f"{name}: {got.shape[1]} values, max |onnxruntime - package| = {d:.2e}")
    if worst > a.tol:
        sys.exit(f"{a.model}: differs from the package's forward pass by {worst} > {a.tol}")


if __name__ == "__main__":
    main()
