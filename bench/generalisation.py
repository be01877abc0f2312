#!/usr/bin/env python3
"""Generalisation table for trained bundles (issue 8), measured, never typed in.

For each bundle directory given, reads the identity-disjoint DFDC test metrics, the
JPEG re-compression metrics and the self-blended test (test reals against their
self-blends; `"self_blended_test": true`) that `fakewatch-train fit` stored in its
bundle.json, then runs `fakewatch scan --json` on the shared media: the DFDC
fake videos (label from their metadata.json), the real talking-head clips, and
the 94 labelled clips of data/media/generated (54 fakes of other generators, 40
reals: video AUC with a seeded bootstrap 95 % interval, accuracy at the
bundle's own decision, AUC per kind of generator).
Prints one Markdown table, and with --json the raw numbers.

Needs ../shared (research data) and a built `fakewatch` (release by default):

    python3 bench/generalisation.py models/default /tmp/b/facenet-self-blended ...
"""

import argparse
import csv
import json
import os
import random
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def scan(fakewatch, bundle, inputs, frames):
    out = subprocess.run(
        [fakewatch, "scan", "--json", "--bundle", str(bundle), "--frames", str(frames)]
        + [str(p) for p in inputs],
        capture_output=True,
        text=True,
    )
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    if len(rows) != len(inputs):
        sys.exit(f"scan of {bundle} gave {len(rows)} rows for {len(inputs)} inputs:\n{out.stderr}")
    return rows


def auc(pos, neg):
    """Probability that a fake outscores a real (ties count half)."""
    if not pos or not neg:
        return None
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def bootstrap_ci(pos, neg, n=1000, seed=0):
    """95 % percentile interval of the AUC, resampling fakes and reals separately (seeded)."""
    if not pos or not neg:
        return None
    rng = random.Random(seed)
    vals = sorted(
        auc([rng.choice(pos) for _ in pos], [rng.choice(neg) for _ in neg]) for _ in range(n)
    )
    return vals[int(0.025 * n)], vals[int(0.975 * n) - 1]


def generated_set(media):
    """The labelled clips of data/media/generated (other generators: a held-out source)."""
    root = media / "generated"
    if not (root / "labels.csv").exists():
        return []
    with open(root / "labels.csv", newline="") as fh:
        return [(root / r["file"], r["label"] == "fake", r["kind"]) for r in csv.DictReader(fh)]


def fmt(v, digits=3):
    return "–" if v is None else f"{v:.{digits}f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundles", nargs="+", type=Path)
    ap.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    ap.add_argument("--fakewatch", default=str(ROOT / "target/release/fakewatch"))
    ap.add_argument("--frames", type=int, default=25)
    ap.add_argument("--json", type=Path, help="also write the raw numbers here")
    ap.add_argument("--no-generated", action="store_true",
                    help="skip the 94 labelled clips of data/media/generated")
    a = ap.parse_args()

    media = a.shared / "data/media"
    meta = json.loads((media / "dfdc-sample-videos/metadata.json").read_text())
    fakes = sorted(media / "dfdc-sample-videos" / n for n, m in meta.items() if m["label"] == "FAKE")
    reals = sorted((media / "talking-heads").glob("*.mp4"))
    if not fakes or not reals:
        sys.exit(f"no media under {media}")

    generated = [] if a.no_generated else generated_set(media)
    results = []
    for b in a.bundles:
        m = json.loads((b / "bundle.json").read_text())
        metrics = m.get("metrics") or {}
        rob = metrics.get("robustness") or {}
        threshold = (m.get("decision") or {}).get("threshold")
        rows = scan(a.fakewatch, b, fakes + reals, a.frames)
        fake_scores = [r["score"] for r in rows[: len(fakes)]]
        real_scores = [r["score"] for r in rows[len(fakes):] if r["score"] is not None]
        flagged = sum(r["label"] == "fake" for r in rows[len(fakes):])
        gen = {}
        if generated:
            g = scan(a.fakewatch, b, [p for p, _, _ in generated], a.frames)
            pos = [r["score"] for r, (_, f, _) in zip(g, generated) if f and r["score"] is not None]
            neg = [r["score"] for r, (_, f, _) in zip(g, generated) if not f and r["score"] is not None]
            right = sum((r["label"] == "fake") == f for r, (_, f, _) in zip(g, generated))
            kinds = sorted({k for _, f, k in generated if f})
            gen = {
                "clips": len(generated),
                "no_face": sum(r["score"] is None for r in g),
                "auc": auc(pos, neg),
                "auc_ci95": bootstrap_ci(pos, neg),
                "accuracy": right / len(generated),
                "auc_by_kind": {
                    k: auc([r["score"] for r, (_, f, kk) in zip(g, generated)
                            if f and kk == k and r["score"] is not None], neg)
                    for k in kinds
                },
                "scores": {str(p.relative_to(media)): r["score"] for r, (p, _, _) in zip(g, generated)},
            }
        results.append(
            {
                "bundle": str(b),
                "fakes": metrics.get("fakes", "real"),
                "test_auc": metrics.get("auc"),
                "test_video_auc": (metrics.get("video") or {}).get("auc"),
                "jpeg_quality": rob.get("jpeg_quality"),
                "jpeg_auc": rob.get("auc"),
                "self_blended_test_auc": (metrics.get("self_blended_test") or {}).get("auc"),
                "threshold": threshold,
                "dfdc_fake_scores": {p.name: s for p, s in zip(fakes, fake_scores)},
                "real_scores": {p.name: r["score"] for p, r in zip(reals, rows[len(fakes):])},
                "real_mean": sum(real_scores) / len(real_scores) if real_scores else None,
                "real_flagged": flagged,
                "real_count": len(reals),
                "media_auc": auc([s for s in fake_scores if s is not None], real_scores),
                "generated": gen,
            }
        )

    print(
        "| bundle | train fakes | DFDC test AUC | JPEG q30 AUC | self-blended test AUC | threshold | "
        + " | ".join(f"{p.stem} (fake)" for p in fakes)
        + " | real clips: mean score | real clips flagged fake | media AUC |"
        + " generated clips: video AUC [95 % CI] | generated: accuracy |"
    )
    print("|---" * (11 + len(fakes)) + "|")
    for r in results:
        print(
            f"| {Path(r['bundle']).name} | {r['fakes']} | {fmt(r['test_auc'], 4)} | "
            f"{fmt(r['jpeg_auc'], 4)} | {fmt(r['self_blended_test_auc'], 4)} | "
            f"{fmt(r['threshold'], 4)} | "
            + " | ".join(fmt(s) for s in r["dfdc_fake_scores"].values())
            + f" | {fmt(r['real_mean'])} | {r['real_flagged']}/{r['real_count']} | {fmt(r['media_auc'])} |"
            + gen_cells(r["generated"])
        )
    if a.json:
        a.json.write_text(json.dumps(results, indent=1) + "\n")


def gen_cells(g):
    if not g:
        return " – | – |"
    ci = g["auc_ci95"]
    ci = f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else ""
    return f" {fmt(g['auc'])}{ci} | {fmt(g['accuracy'])} |"


if __name__ == "__main__":
    main()
