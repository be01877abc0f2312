"""Write MTCNN P/R/O-Net as ONNX from facenet-pytorch 2.6.0's legacy .pt weights.

Layout follows facenet_pytorch/models/mtcnn.py exactly:
  * input NCHW float32, RGB, normal orientation, already normalised as (x - 127.5) / 128;
  * PNet has symbolic H and W; R/ONet take 24x24 / 48x48 with a symbolic batch;
  * torch's ceil_mode max-pooling is written as explicit end padding (1 px), which gives
    identical output sizes and values for stride-2 pools;
  * the permute(0, 3, 2, 1) before the dense layers is kept as a Transpose.
Outputs: PNet  reg [N,4,h,w], prob [N,2,h,w]
         RNet  reg [N,4],     prob [N,2]
         ONet  reg [N,4],     landmarks [N,10] (x1..x5, y1..y5), prob [N,2]
"""

import argparse
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_legacy  # noqa: E402

OPSET = 13


class Builder:
    def __init__(self, sd):
        self.sd = sd
        self.nodes = []
        self.inits = []
        self.n = 0

    def init(self, name, arr):
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(arr, dtype=np.float32), name))
        return name

    def tmp(self, prefix):
        self.n += 1
        return f"{prefix}_{self.n}"

    def conv(self, x, name):
        w = self.init(f"{name}.weight", self.sd[f"{name}.weight"])
        b = self.init(f"{name}.bias", self.sd[f"{name}.bias"])
        k = self.sd[f"{name}.weight"].shape[2:]
        y = self.tmp(name)
        self.nodes.append(helper.make_node("Conv", [x, w, b], [y], name=name, kernel_shape=list(k)))
        return y

    def prelu(self, x, name, spatial):
        slope = self.sd[f"{name}.weight"]
        if spatial:
            slope = slope.reshape(-1, 1, 1)
        s = self.init(f"{name}.weight", slope)
        y = self.tmp(name)
        self.nodes.append(helper.make_node("PRelu", [x, s], [y], name=name))
        return y

    def pool(self, x, name, k, s):
        y = self.tmp(name)
        # ceil_mode=True == one extra padded (-inf) cell at the end for stride 2.
        self.nodes.append(
            helper.make_node("MaxPool", [x], [y], name=name, kernel_shape=[k, k], strides=[s, s], pads=[0, 0, 1, 1])
        )
        return y

    def dense(self, x, name):
        w = self.init(f"{name}.weight", self.sd[f"{name}.weight"])
        b = self.init(f"{name}.bias", self.sd[f"{name}.bias"])
        y = self.tmp(name)
        self.nodes.append(helper.make_node("Gemm", [x, w, b], [y], name=name, transB=1))
        return y

    def softmax(self, x, out):
        self.nodes.append(helper.make_node("Softmax", [x], [out], name=out, axis=1))
        return out

    def identity(self, x, out):
        self.nodes.append(helper.make_node("Identity", [x], [out], name=out))
        return out

    def flatten_wh(self, x):
        t = self.tmp("permute")
        self.nodes.append(helper.make_node("Transpose", [x], [t], name=t, perm=[0, 3, 2, 1]))
        y = self.tmp("flatten")
        self.nodes.append(helper.make_node("Flatten", [t], [y], name=y, axis=1))
        return y

    def model(self, graph_name, inp_shape, outputs):
        inp = helper.make_tensor_value_info("input", TensorProto.FLOAT, inp_shape)
        outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs]
        g = helper.make_graph(self.nodes, graph_name, [inp], outs, self.inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="fakewatch-models")
        m.ir_version = 8
        onnx.checker.check_model(m, full_check=True)
        return m


def pnet(sd):
    b = Builder(sd)
    x = b.conv("input", "conv1")
    x = b.prelu(x, "prelu1", True)
    x = b.pool(x, "pool1", 2, 2)
    x = b.prelu(b.conv(x, "conv2"), "prelu2", True)
    x = b.prelu(b.conv(x, "conv3"), "prelu3", True)
    b.softmax(b.conv(x, "conv4_1"), "prob")
    b.identity(b.conv(x, "conv4_2"), "reg")
    return b.model("pnet", ["N", 3, "H", "W"], [("reg", ["N", 4, "h", "w"]), ("prob", ["N", 2, "h", "w"])])


def rnet(sd):
    b = Builder(sd)
    x = b.pool(b.prelu(b.conv("input", "conv1"), "prelu1", True), "pool1", 3, 2)
    x = b.pool(b.prelu(b.conv(x, "conv2"), "prelu2", True), "pool2", 3, 2)
    x = b.prelu(b.conv(x, "conv3"), "prelu3", True)
    x = b.prelu(b.dense(b.flatten_wh(x), "dense4"), "prelu4", False)
    b.softmax(b.dense(x, "dense5_1"), "prob")
    b.identity(b.dense(x, "dense5_2"), "reg")
    return b.model("rnet", ["N", 3, 24, 24], [("reg", ["N", 4]), ("prob", ["N", 2])])


def onet(sd):
    b = Builder(sd)
    x = b.pool(b.prelu(b.conv("input", "conv1"), "prelu1", True), "pool1", 3, 2)
    x = b.pool(b.prelu(b.conv(x, "conv2"), "prelu2", True), "pool2", 3, 2)
    x = b.pool(b.prelu(b.conv(x, "conv3"), "prelu3", True), "pool3", 2, 2)
    x = b.prelu(b.conv(x, "conv4"), "prelu4", True)
    x = b.prelu(b.dense(b.flatten_wh(x), "dense5"), "prelu5", False)
    b.softmax(b.dense(x, "dense6_1"), "prob")
    b.identity(b.dense(x, "dense6_2"), "reg")
    b.identity(b.dense(x, "dense6_3"), "landmarks")
    return b.model("onet", ["N", 3, 48, 48], [("reg", ["N", 4]), ("landmarks", ["N", 10]), ("prob", ["N", 2])])


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", required=True, help="facenet_pytorch/data directory")
    ap.add_argument("--out", required=True, help="output directory")
    a = ap.parse_args()
    for name, fn in (("pnet", pnet), ("rnet", rnet), ("onet", onet)):
        sd = torch_legacy.load_state_dict(os.path.join(a.data, f"{name}.pt"))
        m = fn(sd)
        path = os.path.join(a.out, f"mtcnn_{name}.onnx")
        # Deterministic bytes: no doc strings or timestamps in the file.
        with open(path, "wb") as fh:
            fh.write(m.SerializeToString(deterministic=True))
        print("wrote", path)


if __name__ == "__main__":
    main()
