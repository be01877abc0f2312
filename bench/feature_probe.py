#!/usr/bin/env python3
"""Screen feature sets by leave-one-source-out from the trainer's embedding caches (issue 23).

`fakewatch-train fit` caches, per perception bundle, the features of every face it extracted
(`~/.cache/fakewatch/embeddings-<perception key>.ndjson`): the train crops augmented (`+aug-`),
validation and test crops plain, a self-blended twin of real crops (`+sbi1-`) and the test crops
re-compressed (`+jpeg`). This script joins several caches by key (so two backbones' features can
be concatenated without a new extraction), and fits a standardised L2 logistic regression
(L-BFGS, L2 strength chosen on validation) in the three settings of `bench/loso.py`:

- in-domain: train on DFDC fakes + self-blends of half the train reals, test on DFDC test fakes;
- held-out self-blends: train on DFDC fakes only, test reals against their self-blends;
- held-out DFDC fakes: train on self-blends only, test reals against DFDC's fakes.

It is a screen, not the shipped pipeline (which `fit` + `bench/loso.py` measure): the face-level
AUCs should land near the fitted bundles' for the same features, which the first row checks.

    python3 bench/feature_probe.py faceres=~/.cache/fakewatch/embeddings-0efed….ndjson \
        lite0=~/.cache/fakewatch/embeddings-c433….ndjson --sets faceres lite0 faceres+lite0
"""

import argparse
import csv
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

DATASET = Path(__file__).resolve().parent.parent.parent / "shared/data/dfdc-faces"
L2_GRID = [1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 3e-4, 1e-4]


def auc(y, s):
    """Rank AUC with ties averaged."""
    y = np.asarray(y, bool)
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s))
    sorted_s = np.asarray(s)[order]
    i = 0
    while i < len(s):
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    n1, n0 = y.sum(), (~y).sum()
    return (ranks[y].sum() - n1 * (n1 + 1) / 2) / (n1 * n0)


def load(path, wanted):
    """key -> feature vector of the first face, for keys whose file part is wanted."""
    out = {}
    with open(path) as fh:
        for line in fh:
            k = line[8:line.index('"', 8)]
            if k.split("+")[0] not in wanted:
                continue
            d = json.loads(line)
            if d["faces"]:
                f = d["faces"][0]
                out[k] = np.asarray(f.get("features") or f["embedding"], np.float32)
    return out


def lbfgs_logistic(x, y, l2, iters=300, m=10):
    """Minimises mean log-loss + l2/2 |w|^2 (bias unpenalised) by L-BFGS."""
    n, d = x.shape
    w = np.zeros(d + 1)
    t = 2.0 * y - 1.0

    def f_g(w):
        z = x @ w[:d] + w[d]
        m_ = -t * z
        loss = np.mean(np.logaddexp(0, m_)) + 0.5 * l2 * w[:d] @ w[:d]
        s = -t / (1 + np.exp(-m_))
        g = np.empty(d + 1)
        g[:d] = x.T @ s / n + l2 * w[:d]
        g[d] = s.mean()
        return loss, g

    f, g = f_g(w)
    S, Y = [], []
    for _ in range(iters):
        q = g.copy()
        alphas = []
        for s_, y_ in reversed(list(zip(S, Y))):
            a = (s_ @ q) / (y_ @ s_)
            alphas.append(a)
            q -= a * y_
        if S:
            q *= (S[-1] @ Y[-1]) / (Y[-1] @ Y[-1])
        for (s_, y_), a in zip(zip(S, Y), reversed(alphas)):
            b = (y_ @ q) / (y_ @ s_)
            q += s_ * (a - b)
        p = -q
        step = 1.0
        while True:
            w2 = w + step * p
            f2, g2 = f_g(w2)
            if f2 <= f + 1e-4 * step * (g @ p) or step < 1e-10:
                break
            step *= 0.5
        s_, y_ = w2 - w, g2 - g
        if s_ @ y_ > 1e-12:
            S.append(s_)
            Y.append(y_)
            if len(S) > m:
                S.pop(0)
                Y.pop(0)
        converged = abs(f - f2) < 1e-9 * max(1.0, abs(f))
        w, f, g = w2, f2, g2
        if converged or np.linalg.norm(g) < 1e-6:
            break
    return w


def fit_and_score(train, val, tests, grid=L2_GRID):
    """train/val: (x, y); tests: dict name -> (x, y). Standardise on train, pick L2 on val."""
    mu = train[0].mean(0)
    sd = train[0].std(0) + 1e-6
    z = lambda a: ((a - mu) / sd).astype(np.float64)
    xt, xv = z(train[0]), z(val[0])
    best = None
    for l2 in grid:
        w = lbfgs_logistic(xt, train[1], l2)
        a = auc(val[1], xv @ w[:-1] + w[-1])
        if best is None or a > best[0]:
            best = (a, l2, w)
    _, l2, w = best
    return l2, {k: auc(y, z(x) @ w[:-1] + w[-1]) for k, (x, y) in tests.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("caches", nargs="+", help="NAME=cache.ndjson")
    ap.add_argument("--sets", nargs="+", required=True, help="feature sets: NAME or NAME+NAME")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--l2", type=float, nargs="+", default=L2_GRID,
                    help="L2 strengths to choose from on validation (fewer: faster)")
    args = ap.parse_args()

    rows = list(csv.DictReader(open(DATASET / "labels.csv")))
    sha = {}
    for r in rows:
        sha[hashlib.sha256((DATASET / r["file"]).read_bytes()).hexdigest()] = r
    caches = {}
    for c in args.caches:
        name, path = c.split("=", 1)
        caches[name] = load(Path(path).expanduser(), sha)
        print(f"{name}: {len(caches[name])} cached faces", file=sys.stderr)

    rng = np.random.default_rng(args.seed)
    fit_opts = {"grid": args.l2}
    print("| features | dim | DFDC test | held-out DFDC fakes | held-out self-blends | LOSO mean | JPEG q30 |")
    print("|---|---|---|---|---|---|---|")
    for fs in args.sets:
        # NAME or NAME[a:b,c:d] (column ranges of that cache), joined by "+".
        parts = []
        for part in fs.split("+"):
            name, _, cols = part.partition("[")
            ranges = [tuple(int(v) for v in r.split(":")) for r in cols.rstrip("]").split(",")] if cols else None
            parts.append((name, ranges))
        keys = set.intersection(*(set(caches[n]) for n, _ in parts))

        def vec(k):
            out = []
            for n, ranges in parts:
                v = caches[n][k]
                out.extend([v] if ranges is None else [v[a:b] for a, b in ranges])
            return np.concatenate(out)
        # Per file: its plain / aug / sbi / jpeg keys.
        by = {}
        for k in keys:
            h, _, suffix = k.partition("+")
            kind = suffix.split("-")[0][:3] if suffix else "plain"
            by.setdefault(h, {})[kind] = k
        sets = {}

        def add(name, key, label):
            sets.setdefault(name, ([], []))
            sets[name][0].append(vec(key))
            sets[name][1].append(label)

        for h, kinds in by.items():
            r = sha[h]
            fake = r["label"] == "fake"
            sp = r["split"]
            if sp == "train" and "aug" in kinds:
                add("train_real" if not fake else "train_fake", kinds["aug"], fake)
                if not fake and "sbi" in kinds:
                    add("train_sbi", kinds["sbi"], True)
            elif sp == "val" and "plain" in kinds:
                add("val_real" if not fake else "val_fake", kinds["plain"], fake)
                if not fake and "sbi" in kinds:
                    add("val_sbi", kinds["sbi"], True)
            elif sp == "test" and "plain" in kinds:
                add("test_real" if not fake else "test_fake", kinds["plain"], fake)
                if not fake and "sbi" in kinds:
                    add("test_sbi", kinds["sbi"], True)
                if "jpe" in kinds:
                    add("jpeg_real" if not fake else "jpeg_fake", kinds["jpe"], fake)
        arr = {k: (np.stack(v[0]), np.asarray(v[1], float)) for k, v in sets.items()}
        cat = lambda *ns: (np.concatenate([arr[n][0] for n in ns]), np.concatenate([arr[n][1] for n in ns]))
        half = rng.random(len(arr["train_sbi"][1])) < 0.5
        arr["train_sbi_half"] = (arr["train_sbi"][0][half], arr["train_sbi"][1][half])
        _, both = fit_and_score(cat("train_real", "train_fake", "train_sbi_half"), cat("val_real", "val_fake", "val_sbi"),
                                {"test": cat("test_real", "test_fake"), "jpeg": cat("jpeg_real", "jpeg_fake")}, **fit_opts)
        _, real = fit_and_score(cat("train_real", "train_fake"), cat("val_real", "val_fake"),
                                {"sbi": cat("test_real", "test_sbi")}, **fit_opts)
        _, sbi = fit_and_score(cat("train_real", "train_sbi"), cat("val_real", "val_sbi"),
                               {"dfdc": cat("test_real", "test_fake")}, **fit_opts)
        dim = arr["test_real"][0].shape[1]
        mean = (real["sbi"] + sbi["dfdc"]) / 2
        print(f"| {fs} | {dim} | {both['test']:.4f} | {sbi['dfdc']:.4f} | {real['sbi']:.4f} | {mean:.4f} | {both['jpeg']:.4f} |",
              flush=True)


if __name__ == "__main__":
    main()
