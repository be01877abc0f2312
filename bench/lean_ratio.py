#!/usr/bin/env python3
"""`fakewatch scan` against the lean Python pipeline (bench/reference/lean.py), issue 29.

Back to back, best of --repeats, wall time of whole processes (start-up and model load
included, as a user sees them): the six clips in one process each way, then each clip in
its own process each way. Prints a Markdown table with the ratios.

    PYTHONPATH=target/pyref python3 bench/lean_ratio.py [--fakewatch target/release/fakewatch]
"""

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLIPS = [
    "talking-heads/retalking_1.mp4",
    "talking-heads/retalking_4.mp4",
    "talking-heads/liveportrait_d13.mp4",
    "talking-heads/liveportrait_d9.mp4",
    "talking-heads/hdtf_WDA_KatieHill_000.mp4",
    "dfdc-sample-videos/abofeumbvv.mp4",
]


def timed(cmd):
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if out.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{out.stderr[-2000:]}")
    return dt


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fakewatch", default=str(ROOT / "target/release/fakewatch"))
    ap.add_argument("--bundle", default=str(ROOT / "models/default"))
    ap.add_argument("--media", type=Path, default=ROOT.parent / "shared/data/media")
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    clips = [str(a.media / c) for c in CLIPS]
    ours = lambda vs: [a.fakewatch, "scan", "--json", "--bundle", a.bundle, "--frames", str(a.frames),
                       "--threads", str(a.threads)] + vs
    lean = lambda vs: [sys.executable, str(ROOT / "bench/reference/lean.py"), "--bundle", a.bundle,
                       "--frames", str(a.frames), "--threads", str(a.threads)] + vs
    rows = [("all six, one process", clips)] + [(Path(c).stem, [c]) for c in clips]
    best = {name: [float("inf"), float("inf")] for name, _ in rows}
    for r in range(a.repeats):
        for name, vs in rows:
            best[name][0] = min(best[name][0], timed(ours(vs)))
            best[name][1] = min(best[name][1], timed(lean(vs)))
        print(f"repeat {r + 1}/{a.repeats} done", file=sys.stderr)
    print(f"| input ({a.frames} frames, {a.threads} threads, best of {a.repeats}) | fakewatch scan s | lean Python s | ratio |")
    print("|---|---|---|---|")
    for name, _ in rows:
        f, p = best[name]
        print(f"| {name} | {f:.2f} | {p:.2f} | {p / f:.2f}× |")


if __name__ == "__main__":
    main()
