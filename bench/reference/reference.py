#!/usr/bin/env python3
"""Reference pipeline for `fakewatch bench --reference`: the paper's path in
Python, numpy and onnxruntime on the same ONNX files and parameters.

MTCNN follows facenet-pytorch 2.6.0's ``detect_face`` (area pyramid, PNet,
NMS 0.5 per scale and 0.7 across scales, RNet, ONet, "Min" NMS 0.7), then the
FaceNet margin crop, the backbone, the bundle's triplet head and classifier.
Frames come from the same GStreamer decoder fakewatch uses
(``uridecodebin ! videoconvert ! RGB``), read from a ``gst-launch-1.0`` pipe,
so both programs see identical pixels.

    python3 reference.py --bundle models/default --frames 8 --json out.ndjson a.mp4 b.mp4

prints one JSON object per sampled frame (faces with box, score, p_fake) and
one per video (``{"video": ..., "seconds": ..., "score": ...}``).
"""
import argparse
import json
import math
import os
import re
import subprocess
import sys
import threading
import time

import numpy as np
import onnxruntime as ort


# ---------------------------------------------------------------- decoding

DECODE_SECONDS = [0.0]


def frames_of(path, n):
    """Evenly sampled frames (the centres of n equal bins), as fakewatch scan samples."""
    t0 = time.perf_counter()
    w, h, raw = decode_raw(path)
    DECODE_SECONDS[0] = time.perf_counter() - t0
    stride = (w * 3 + 3) & ~3  # GStreamer pads RGB rows to 4 bytes
    size = stride * h
    total = len(raw) // size
    if n >= total:
        idx = list(range(total))
    else:
        idx = [((2 * i + 1) * total) // (2 * n) for i in range(n)]
    for k in idx:
        rows = np.frombuffer(raw, np.uint8, size, k * size).reshape(h, stride)
        yield k, np.ascontiguousarray(rows[:, : w * 3]).reshape(h, w, 3)


def decode_raw(path):
    """Width, height and the concatenated raw RGB frames of `path`: the frames
    go through a pipe, the negotiated caps come from ``gst-launch-1.0 -v``."""
    uri = path if "://" in path else "file://" + os.path.abspath(path)
    r, w = os.pipe()
    cmd = ["gst-launch-1.0", "-v", "uridecodebin", "uri=" + uri, "!", "videoconvert", "!",
           "video/x-raw,format=RGB", "!", "fdsink", f"fd={w}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, pass_fds=(w,))
    os.close(w)
    chunks = []
    reader = threading.Thread(target=lambda: chunks.extend(iter(lambda: os.read(r, 1 << 20), b"")))
    reader.start()
    out, err = proc.communicate()
    reader.join()
    os.close(r)
    if proc.returncode != 0:
        raise RuntimeError(f"{path}: gst-launch-1.0 failed: {err.decode(errors='replace')[-500:]}")
    caps = [l for l in out.decode(errors="replace").splitlines()
            if "caps = video/x-raw" in l and "format=(string)RGB" in l]
    if not caps:
        raise RuntimeError(f"{path}: no video stream")
    dim = lambda k: int(re.search(k + r"=\(int\)(\d+)", caps[-1]).group(1))
    return dim("width"), dim("height"), b"".join(chunks)


# ---------------------------------------------------------------- resampling

def windows(n_in, n_out):
    s = (np.arange(n_out) * n_in) // n_out
    e = -((-(np.arange(1, n_out + 1) * n_in)) // n_out)
    return s, np.maximum(e, s + 1)


def resize_area(img, ow, oh):
    """PyTorch ``interpolate(mode="area")`` of an (H, W, 3) image to (3, oh, ow) float32."""
    ih, iw = img.shape[:2]
    f = img.astype(np.float32)
    cs, ce = windows(iw, ow)
    c = np.concatenate([np.zeros((ih, 1, 3), np.float32), np.cumsum(f, axis=1, dtype=np.float64).astype(np.float32)], axis=1)
    tmp = (c[:, ce] - c[:, cs]) / (ce - cs)[None, :, None].astype(np.float32)
    rs, re_ = windows(ih, oh)
    r = np.concatenate([np.zeros((1, ow, 3), np.float32), np.cumsum(tmp, axis=0, dtype=np.float64).astype(np.float32)], axis=0)
    out = (r[re_] - r[rs]) / (re_ - rs)[:, None, None].astype(np.float32)
    return out.transpose(2, 0, 1)


def norm(x):
    return (x - 127.5) * 0.0078125


# ---------------------------------------------------------------- MTCNN

def nms(boxes, scores, thr, kind="union"):
    order = np.argsort(-scores, kind="stable")
    keep = []
    suppressed = np.zeros(len(scores), bool)
    x1, y1, x2, y2 = boxes.T
    add = 1.0 if kind == "min" else 0.0
    area = (x2 - x1 + add) * (y2 - y1 + add)
    for k, i in enumerate(order):
        if suppressed[i]:
            continue
        keep.append(i)
        rest = order[k + 1:]
        rest = rest[~suppressed[rest]]
        if len(rest) == 0:
            continue
        iw = np.maximum(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + add, 0)
        ih = np.maximum(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + add, 0)
        inter = iw * ih
        if kind == "min":
            o = inter / np.minimum(area[i], area[rest])
        else:
            u = area[i] + area[rest] - inter
            o = np.where(u > 0, inter / np.where(u > 0, u, 1), 0)
        suppressed[rest[o > thr]] = True
    return np.array(keep, dtype=np.int64)


def square(b):
    w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    l = np.maximum(w, h)
    x1 = b[:, 0] + w * 0.5 - l * 0.5
    y1 = b[:, 1] + h * 0.5 - l * 0.5
    return np.stack([x1, y1, x1 + l, y1 + l], 1)


def bbreg(b, reg):
    w, h = b[:, 2] - b[:, 0] + 1, b[:, 3] - b[:, 1] + 1
    return np.stack([b[:, 0] + reg[:, 0] * w, b[:, 1] + reg[:, 1] * h,
                     b[:, 2] + reg[:, 2] * w, b[:, 3] + reg[:, 3] * h], 1)


def crops(img, boxes, size):
    h, w = img.shape[:2]
    out, kept = [], []
    for i, b in enumerate(boxes):
        t = np.trunc(np.nan_to_num(b, nan=0.0)).astype(np.int64)
        x, y = max(t[0], 1), max(t[1], 1)
        ex, ey = min(t[2], w), min(t[3], h)
        if ex > x - 1 and ey > y - 1 and x - 1 < w and y - 1 < h:
            out.append(norm(resize_area(img[y - 1:ey, x - 1:ex], size, size)))
            kept.append(i)
    return np.array(kept, np.int64), (np.stack(out) if out else None)


class Mtcnn:
    def __init__(self, files, opts, min_face, factor, thresholds):
        self.p, self.r, self.o = (ort.InferenceSession(f, opts, providers=["CPUExecutionProvider"]) for f in files)
        self.min_face, self.factor, self.th = min_face, factor, thresholds

    def detect(self, img):
        h, w = img.shape[:2]
        m = 12.0 / self.min_face
        minl = min(h, w) * m
        scale = m
        boxes, scores, regs = [], [], []
        while minl >= 12:
            hs, ws = int(h * scale + 1), int(w * scale + 1)
            x = norm(resize_area(img, ws, hs))[None]
            reg, prob = self.p.run(None, {self.p.get_inputs()[0].name: x})
            face = prob[0, 1]
            ys, xs = np.nonzero(face >= self.th[0])
            if len(ys):
                # row-major order, as the Rust scan
                order = np.lexsort((xs, ys))
                ys, xs = ys[order], xs[order]
                s = face[ys, xs]
                q1 = lambda v: np.floor((2 * v + 1) / scale)
                q2 = lambda v: np.floor((2 * v + 12) / scale)
                b = np.stack([q1(xs), q1(ys), q2(xs), q2(ys)], 1).astype(np.float32)
                r = reg[0][:, ys, xs].T
                k = nms(b, s, 0.5)
                boxes.append(b[k]); scores.append(s[k]); regs.append(r[k])
            scale *= self.factor
            minl *= self.factor
        if not boxes:
            return []
        b, s, r = np.concatenate(boxes), np.concatenate(scores), np.concatenate(regs)
        k = nms(b, s, 0.7)[:2000]
        b, s, r = b[k], s[k], r[k]
        bw, bh = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
        b = square(np.stack([b[:, 0] + r[:, 0] * bw, b[:, 1] + r[:, 1] * bh,
                             b[:, 2] + r[:, 2] * bw, b[:, 3] + r[:, 3] * bh], 1))
        # RNet
        kept, x = crops(img, b, 24)
        if x is None:
            return []
        reg, prob = self.r.run(None, {self.r.get_inputs()[0].name: x})
        sel = prob[:, 1] > self.th[1]
        b, s, reg = b[kept][sel], prob[sel, 1], reg[sel]
        k = nms(b, s, 0.7)
        b = square(bbreg(b[k], reg[k]))
        # ONet
        kept, x = crops(img, b, 48)
        if x is None:
            return []
        reg, lm, prob = self.o.run(None, {self.o.get_inputs()[0].name: x})
        sel = prob[:, 1] > self.th[2]
        b, s, reg, lm = b[kept][sel], prob[sel, 1], reg[sel], lm[sel]
        bw, bh = b[:, 2] - b[:, 0] + 1, b[:, 3] - b[:, 1] + 1
        pts = np.stack([bw[:, None] * lm[:, :5] + b[:, :1] - 1, bh[:, None] * lm[:, 5:] + b[:, 1:2] - 1], 2)
        b = bbreg(b, reg)
        k = nms(b, s, 0.7, "min")
        return [(b[i], float(s[i]), pts[i]) for i in k]


# ---------------------------------------------------------------- embedding + scoring

def with_pooled_outputs(path, names):
    """The ONNX model at `path` as bytes, with the tensors `names` added as graph outputs."""
    import onnx

    m = onnx.load(path)
    have = {o.name for o in m.graph.output}
    for n in names:
        if n not in have:
            m.graph.output.append(onnx.helper.make_empty_tensor_value_info(n))
    return m.SerializeToString()


STATS = {
    "mean": lambda t: t.mean(axis=(2, 3)),
    "max": lambda t: t.max(axis=(2, 3)),
    "std": lambda t: np.sqrt(np.maximum((t * t).mean(axis=(2, 3)) - t.mean(axis=(2, 3)) ** 2, 0)),
}


class PooledBackbone:
    """The bundle's backbone on onnxruntime, as the SDK runs it: the embedding and, for a
    multi-level bundle, the pooled features (`features.pool`, each `features.stats` in turn).
    Each branch (`backbone.branches`) runs as its own session on its own normalisation of the
    same crop, where the SDK merges it into one graph."""

    def __init__(self, bb, res, opts):
        feats = bb.get("features") or {}
        self.pool, self.stats = feats.get("pool", []), feats.get("stats", ["mean"])
        mean = lambda m: np.broadcast_to(np.asarray(m, np.float32), (3,))
        main_mean = mean(bb["mean"])
        self.nets = []  # (session, prefix, scale, offset) — input = main_input * scale + offset
        branches = bb.get("branches", [])
        own = [n for n in self.pool if not any(n.startswith(b["prefix"]) for b in branches)]
        specs = [(bb["file"], "", own, 1.0, np.zeros(3, np.float32))]
        for b in branches:
            names = [n[len(b["prefix"]):] for n in self.pool if n.startswith(b["prefix"])]
            scale = b["scale"] / bb["scale"]
            offset = (main_mean - mean(b["mean"])) * b["scale"]
            specs.append((b["file"], b["prefix"], names, scale, offset.astype(np.float32)))
        for f, prefix, names, scale, offset in specs:
            model = with_pooled_outputs(res(f), names) if names else res(f)
            sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
            self.nets.append((sess, prefix, scale, offset))

    def run(self, x):
        """`x`: NCHW crops normalised for the main backbone. Returns (embedding output,
        pooled features or None)."""
        named, first = {}, None
        for sess, prefix, scale, offset in self.nets:
            xi = x if not prefix else (x * np.float32(scale) + offset[None, :, None, None]).astype(np.float32)
            outs = sess.run(None, {sess.get_inputs()[0].name: xi})
            if first is None:
                first = outs[0]
            for o, v in zip(sess.get_outputs(), outs):
                named[prefix + o.name] = v
        if not self.pool:
            return first, None
        return first, np.concatenate([STATS[s](named[n]) for s in self.stats for n in self.pool],
                                     axis=1).astype(np.float32)


def crop_rect(aligner, box, w, h):
    """The SDK's crop rectangle (x0, y0, x1, y1) of a detection box for the
    bundle's aligner: ``facenet_margin`` (box ± margin/2, clamped) or
    ``box_square`` (a square of side × box width, centred shift × box width
    below the box centre, moved inside the frame, shrunk only to fit it)."""
    if aligner["kind"] == "box_square":
        bw = np.float32(box[2]) - np.float32(box[0])
        cx = (np.float32(box[0]) + np.float32(box[2])) / np.float32(2)
        cy = (np.float32(box[1]) + np.float32(box[3])) / np.float32(2) + np.float32(aligner.get("shift", 0.0)) * bw
        side = min(int(np.floor(np.float32(aligner.get("side", 1.0)) * bw + np.float32(0.5))), w, h)
        place = lambda c, extent: int(np.clip(np.floor(c - np.float32(side) / 2 + np.float32(0.5)), 0, extent - side))
        x0, y0 = place(cx, w), place(cy, h)
        return x0, y0, x0 + side, y0 + side
    m = aligner["margin"] / 2
    return (int(np.clip(box[0] - m, 0, w)), int(np.clip(box[1] - m, 0, h)),
            int(np.clip(box[2] + m, 0, w)), int(np.clip(box[3] + m, 0, h)))


class Scorer:
    def __init__(self, bundle, opts):
        j = json.load(open(os.path.join(bundle, "bundle.json")))
        res = lambda f: os.path.normpath(os.path.join(bundle, f))
        d = j["detector"]
        self.mtcnn = Mtcnn([res(d["pnet"]), res(d["rnet"]), res(d["onet"])], opts,
                           d.get("min_face", 40.0), d.get("factor", 0.709), d.get("thresholds", [0.6, 0.7, 0.9]))
        a, bb = j["aligner"], j["backbone"]
        if a["kind"] not in ("facenet_margin", "box_square") or bb.get("bgr") or bb.get("center"):
            raise SystemExit("reference supports the facenet_margin and box_square aligners, RGB, no centre")
        self.aligner = a
        self.size = a["size"]
        self.mean, self.scale = bb["mean"], bb["scale"]
        sess = lambda f: ort.InferenceSession(res(f), opts, providers=["CPUExecutionProvider"])
        # Multi-level bundles: the pooled tensors become extra graph outputs
        # (as the SDK's pooling edit does), pooled over H and W here.
        self.backbone = PooledBackbone(bb, res, opts)
        self.head = sess(j["head"]["file"]) if j.get("head") else None
        self.clf = sess(j["classifier"]["file"])

    def align(self, img, box):
        h, w = img.shape[:2]
        x0, y0, x1, y1 = crop_rect(self.aligner, box, w, h)
        if x1 - x0 >= self.size and y1 - y0 >= self.size:
            x = resize_area(img[y0:y1, x0:x1], self.size, self.size)
        else:  # bilinear upscaling, pixel centres, black outside
            s = self.size
            sx, sy = (x1 - x0) / s, (y1 - y0) / s
            gx = x0 + (np.arange(s, dtype=np.float32) + 0.5) * np.float32(sx) - 0.5
            gy = y0 + (np.arange(s, dtype=np.float32) + 0.5) * np.float32(sy) - 0.5
            fx0, fy0 = np.floor(gx), np.floor(gy)
            fx, fy = (gx - fx0)[None, :, None], (gy - fy0)[:, None, None]
            pad = np.zeros((h + 2, w + 2, 3), np.float32)
            pad[1:-1, 1:-1] = img
            xi, yi = fx0.astype(int) + 1, fy0.astype(int) + 1
            xi0, xi1 = np.clip(xi, 0, w + 1), np.clip(xi + 1, 0, w + 1)
            yi0, yi1 = np.clip(yi, 0, h + 1), np.clip(yi + 1, 0, h + 1)
            a, b = pad[yi0][:, xi0], pad[yi0][:, xi1]
            c, d = pad[yi1][:, xi0], pad[yi1][:, xi1]
            top, bot = a + (b - a) * fx, c + (d - c) * fx
            x = (top + (bot - top) * fy).transpose(2, 0, 1)
        return (x - self.mean) * self.scale

    def faces(self, img):
        dets = self.mtcnn.detect(img)
        if not dets:
            return []
        x = np.stack([self.align(img, b) for b, _, _ in dets]).astype(np.float32)
        emb, feats = self.backbone.run(x)
        e = feats if feats is not None else emb / np.linalg.norm(emb, axis=1, keepdims=True)
        if self.head is not None:
            e = self.head.run(None, {self.head.get_inputs()[0].name: e})[0]
        p = self.clf.run(None, {self.clf.get_inputs()[0].name: e})[0].reshape(-1)
        return [{"box": [float(v) for v in b], "score": s, "p_fake": float(np.clip(q, 0, 1))}
                for (b, s, _), q in zip(dets, p)]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("inputs", nargs="+")
    ap.add_argument("--bundle", default="models/default")
    ap.add_argument("--frames", type=int, default=25)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--json", help="write per-frame results here (NDJSON)")
    a = ap.parse_args()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = a.threads
    opts.inter_op_num_threads = 1
    scorer = Scorer(a.bundle, opts)
    out = open(a.json, "w") if a.json else None
    total = 0.0
    for v in a.inputs:
        t0 = time.perf_counter()
        ps, nframes = [], 0
        for k, img in frames_of(v, a.frames):
            faces = scorer.faces(img)
            nframes += 1
            ps += [f["p_fake"] for f in faces]
            if out:
                out.write(json.dumps({"input": v, "frame": k, "faces": faces}) + "\n")
        dt = time.perf_counter() - t0
        total += dt
        score = float(np.mean(ps)) if ps else None
        print(json.dumps({"video": v, "frames": nframes, "faces": len(ps), "seconds": dt,
                          "decode_seconds": DECODE_SECONDS[0], "score": score}))
    print(json.dumps({"videos": len(a.inputs), "seconds": total,
                      "videos_per_minute": 60 * len(a.inputs) / total if total else None}))


if __name__ == "__main__":
    main()
