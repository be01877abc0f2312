"""Check converted models against their sources (run by build_models.sh).

* FaceNet ONNX vs the original TF graph on the same random faces (batch 3, NHWC vs NCHW).
* MTCNN ONNX vs a direct numpy implementation of facenet-pytorch's modules
  (torch semantics: ceil_mode pooling, permute(0,3,2,1) before dense layers).
"""

import argparse
import math
import os
import sys

import numpy as np
import onnxruntime as ort

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_legacy  # noqa: E402


def conv(x, w, b):
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    oh, ow = h - kh + 1, wd - kw + 1
    cols = np.empty((n, c, kh, kw, oh, ow), np.float32)
    for i in range(kh):
        for j in range(kw):
            cols[:, :, i, j] = x[:, :, i : i + oh, j : j + ow]
    return np.einsum("nckluv,ockl->nouv", cols, w, optimize=True) + b[None, :, None, None]


def prelu(x, a):
    shape = (1, -1, 1, 1) if x.ndim == 4 else (1, -1)
    return np.where(x > 0, x, x * a.reshape(shape))


def pool_ceil(x, k, s):
    n, c, h, w = x.shape
    oh, ow = math.ceil((h - k) / s) + 1, math.ceil((w - k) / s) + 1
    out = np.empty((n, c, oh, ow), np.float32)
    for i in range(oh):
        for j in range(ow):
            out[:, :, i, j] = x[:, :, i * s : i * s + k, j * s : j * s + k].max(axis=(2, 3))
    return out


def softmax(x):
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def dense(x, sd, name):
    return x @ sd[f"{name}.weight"].T + sd[f"{name}.bias"]


def ref_pnet(sd, x):
    x = pool_ceil(prelu(conv(x, sd["conv1.weight"], sd["conv1.bias"]), sd["prelu1.weight"]), 2, 2)
    x = prelu(conv(x, sd["conv2.weight"], sd["conv2.bias"]), sd["prelu2.weight"])
    x = prelu(conv(x, sd["conv3.weight"], sd["conv3.bias"]), sd["prelu3.weight"])
    return [conv(x, sd["conv4_2.weight"], sd["conv4_2.bias"]), softmax(conv(x, sd["conv4_1.weight"], sd["conv4_1.bias"]))]


def ref_rnet(sd, x):
    x = pool_ceil(prelu(conv(x, sd["conv1.weight"], sd["conv1.bias"]), sd["prelu1.weight"]), 3, 2)
    x = pool_ceil(prelu(conv(x, sd["conv2.weight"], sd["conv2.bias"]), sd["prelu2.weight"]), 3, 2)
    x = prelu(conv(x, sd["conv3.weight"], sd["conv3.bias"]), sd["prelu3.weight"])
    x = x.transpose(0, 3, 2, 1).reshape(x.shape[0], -1)
    x = prelu(dense(x, sd, "dense4"), sd["prelu4.weight"])
    return [dense(x, sd, "dense5_2"), softmax(dense(x, sd, "dense5_1"))]


def ref_onet(sd, x):
    x = pool_ceil(prelu(conv(x, sd["conv1.weight"], sd["conv1.bias"]), sd["prelu1.weight"]), 3, 2)
    x = pool_ceil(prelu(conv(x, sd["conv2.weight"], sd["conv2.bias"]), sd["prelu2.weight"]), 3, 2)
    x = pool_ceil(prelu(conv(x, sd["conv3.weight"], sd["conv3.bias"]), sd["prelu3.weight"]), 2, 2)
    x = prelu(conv(x, sd["conv4.weight"], sd["conv4.bias"]), sd["prelu4.weight"])
    x = x.transpose(0, 3, 2, 1).reshape(x.shape[0], -1)
    x = prelu(dense(x, sd, "dense5"), sd["prelu5.weight"])
    return [dense(x, sd, "dense6_2"), dense(x, sd, "dense6_3"), softmax(dense(x, sd, "dense6_1"))]


def check(name, got, want, tol):
    err = max(float(np.abs(g - w).max()) for g, w in zip(got, want))
    print(f"{name}: max abs diff {err:.2e} (tolerance {tol:.0e})")
    if not err <= tol:
        raise SystemExit(f"{name}: conversion mismatch")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", required=True)
    ap.add_argument("--torch-data", required=True)
    ap.add_argument("--pb")
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    for name, ref, shape in (
        ("pnet", ref_pnet, (2, 3, 37, 51)),
        ("pnet", ref_pnet, (1, 3, 12, 12)),
        ("rnet", ref_rnet, (3, 3, 24, 24)),
        ("onet", ref_onet, (3, 3, 48, 48)),
    ):
        sd = torch_legacy.load_state_dict(os.path.join(a.torch_data, f"{name}.pt"))
        x = rng.uniform(-1, 1, shape).astype(np.float32)
        sess = ort.InferenceSession(os.path.join(a.models, f"mtcnn_{name}.onnx"))
        check(f"mtcnn_{name} {shape}", sess.run(None, {"input": x}), ref(sd, x), 1e-4)
    if a.pb:
        import tensorflow as tf

        gd = tf.compat.v1.GraphDef()
        with open(a.pb, "rb") as fh:
            gd.ParseFromString(fh.read())
        x = rng.uniform(-1, 1, (3, 160, 160, 3)).astype(np.float32)
        with tf.Graph().as_default() as g:
            tf.import_graph_def(gd, name="")
            with tf.compat.v1.Session(graph=g) as s:
                want = np.concatenate([s.run("embeddings:0", {"input:0": x[i : i + 1]}) for i in range(3)])
        sess = ort.InferenceSession(os.path.join(a.models, "facenet.onnx"))
        got = sess.run(None, {"input": x.transpose(0, 3, 1, 2).copy()})[0]
        check("facenet batch 3 vs TF batch 1", [got], [want], 1e-4)


if __name__ == "__main__":
    main()
