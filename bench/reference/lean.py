#!/usr/bin/env python3
"""The lean Python pipeline of issue 29: what a competent user writes with the same
ONNX files, to time `fakewatch scan` against (`reference.py` is the heavier, exact
one: GStreamer pipe decode, the area resampling of facenet-pytorch in numpy).

- OpenCV decode: ``grab()`` through the video, ``retrieve()`` only at the sampled
  indices (the centres of n equal bins of ``CAP_PROP_FRAME_COUNT``);
- MTCNN in numpy on onnxruntime (the bundle's P/R/O-Nets and parameters; the
  pyramid and crops resized by OpenCV's ``INTER_AREA``);
- the largest face of each frame, cropped by the bundle's aligner (margin or box square);
- all crops of a video through the backbone in **one** batched onnxruntime call,
  its pooled multi-level features (the bundle's ``backbone.features.pool``
  tensors added as graph outputs, averaged in numpy), then one classifier call.

Scores are close to, not identical with, fakewatch's (other resampling; one face
per frame): this script is for timing. One process for all inputs; prints one JSON
object per video and a total:

    PYTHONPATH=target/pyref python3 bench/reference/lean.py --bundle models/default --frames 16 a.mp4 b.mp4

Needs numpy, onnx, onnxruntime and opencv-python-headless (bench/reference/requirements-lean.txt).
"""
import argparse
import json
import os
import sys
import time

import cv2
import numpy as np
import onnxruntime as ort

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference  # noqa: E402  (MTCNN, normalisation, pooled outputs)


def area(img, w, h):
    """(H, W, 3) uint8 → (3, h, w) float32 in MTCNN's normalisation."""
    r = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32)
    return reference.norm(r).transpose(2, 0, 1)


class LeanMtcnn(reference.Mtcnn):
    """reference.Mtcnn with OpenCV resampling."""

    def detect(self, img):
        saved = reference.resize_area
        reference.resize_area = lambda im, w, h: cv2.resize(
            im.astype(np.float32), (w, h), interpolation=cv2.INTER_AREA).transpose(2, 0, 1)
        try:
            return super().detect(img)
        finally:
            reference.resize_area = saved


class Lean:
    def __init__(self, bundle, threads):
        j = json.load(open(os.path.join(bundle, "bundle.json")))
        res = lambda f: os.path.normpath(os.path.join(bundle, f))
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        d = j["detector"]
        self.mtcnn = LeanMtcnn([res(d["pnet"]), res(d["rnet"]), res(d["onet"])], opts,
                               d.get("min_face", 40.0), d.get("factor", 0.709),
                               d.get("thresholds", [0.6, 0.7, 0.9]))
        a, bb = j["aligner"], j["backbone"]
        self.aligner, self.size = a, a["size"]
        self.mean, self.scale = bb["mean"], bb["scale"]
        self.backbone = reference.PooledBackbone(bb, res, opts)
        self.head = (ort.InferenceSession(res(j["head"]["file"]), opts, providers=["CPUExecutionProvider"])
                     if j.get("head") else None)
        self.clf = ort.InferenceSession(res(j["classifier"]["file"]), opts,
                                        providers=["CPUExecutionProvider"])

    def crop(self, img, box):
        h, w = img.shape[:2]
        x0, y0, x1, y1 = reference.crop_rect(self.aligner, box, w, h)
        x = cv2.resize(img[y0:y1, x0:x1], (self.size, self.size), interpolation=cv2.INTER_AREA)
        return ((x.astype(np.float32) - self.mean) * self.scale).transpose(2, 0, 1)

    def scores(self, crops):
        x = np.stack(crops).astype(np.float32)
        emb, feats = self.backbone.run(x)
        if feats is not None:
            e = feats
        else:
            e = emb / np.linalg.norm(emb, axis=1, keepdims=True)
            if self.head is not None:
                e = self.head.run(None, {self.head.get_inputs()[0].name: e})[0]
        return self.clf.run(None, {self.clf.get_inputs()[0].name: e.astype(np.float32)})[0].reshape(-1)


def sampled_frames(path, n):
    cap = cv2.VideoCapture(path)
    if not cap.isOpened():
        raise RuntimeError(f"{path}: cannot open")
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    want = set(range(total)) if n >= total else {((2 * i + 1) * total) // (2 * n) for i in range(n)}
    last = max(want) if want else -1
    k = 0
    while k <= last and cap.grab():
        if k in want:
            ok, bgr = cap.retrieve()
            if ok:
                yield k, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        k += 1
    cap.release()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("inputs", nargs="+")
    ap.add_argument("--bundle", default="models/default")
    ap.add_argument("--frames", type=int, default=25)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--profile", action="store_true",
                    help="also time decode, MTCNN, crops and backbone + classifier (stderr)")
    a = ap.parse_args()
    cv2.setNumThreads(a.threads)
    t_load = time.perf_counter()
    lean = Lean(a.bundle, a.threads)
    load = time.perf_counter() - t_load
    total = 0.0
    stages = {"decode": 0.0, "mtcnn": 0.0, "crop": 0.0, "backbone+classifier": 0.0}
    for v in a.inputs:
        t0 = time.perf_counter()
        crops, frames = [], 0
        it = sampled_frames(v, a.frames)
        while True:
            t = time.perf_counter()
            img = next(it, None)
            stages["decode"] += time.perf_counter() - t
            if img is None:
                break
            img = img[1]
            frames += 1
            t = time.perf_counter()
            dets = lean.mtcnn.detect(img)
            stages["mtcnn"] += time.perf_counter() - t
            if dets:
                t = time.perf_counter()
                b = max(dets, key=lambda d: (d[0][2] - d[0][0]) * (d[0][3] - d[0][1]))[0]
                crops.append(lean.crop(img, b))
                stages["crop"] += time.perf_counter() - t
        t = time.perf_counter()
        p = lean.scores(crops) if crops else np.array([])
        stages["backbone+classifier"] += time.perf_counter() - t
        dt = time.perf_counter() - t0
        total += dt
        print(json.dumps({"video": v, "frames": frames, "faces": len(crops), "seconds": dt,
                          "score": float(np.clip(p.mean(), 0, 1)) if len(p) else None}))
    print(json.dumps({"videos": len(a.inputs), "seconds": total, "load_seconds": load}))
    if a.profile:
        for k, v in stages.items():
            print(f"{k:<22} {v:7.3f} s  {100 * v / max(total, 1e-9):5.1f} %", file=sys.stderr)


if __name__ == "__main__":
    main()
