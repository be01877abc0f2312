#!/usr/bin/env python3
"""Verdict stability of live mode: how often the stream label flips.

Runs `fakewatch run --loop` on each clip for a fixed wall time (paced at the
clip's frame rate, as a camera would deliver it), reads its events and counts
the stream's `verdict_changed` events between `real` and `fake` (changes to or
from `unknown` are counted apart). Real clips should not flip at all: every
flip is an MQTT message and an alert for an operator.

    python3 bench/flips.py --fakewatch target/release/fakewatch --seconds 60 \\
        ../shared/data/media/talking-heads/retalking_*.mp4

Prints one row per clip and the total flips per minute; `--json FILE` keeps
the rows.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

# Seconds a run gets to load its models before the measured time starts.
LOAD_ALLOWANCE_S = 5.0


def run_clip(fakewatch, bundle, clip, seconds, extra):
    with tempfile.TemporaryDirectory() as tmp:
        events = os.path.join(tmp, "events.ndjson")
        cmd = [fakewatch, "run", "--source", clip, "--loop", "--events", events,
               "--stats-interval", "0"] + extra
        if bundle:
            cmd += ["--bundle", bundle]
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        # Events are written through a buffer, so the first verdict cannot be
        # watched for: allow for model loading, then measure from the first
        # stream verdict's t_ms to the summary's.
        deadline = time.time() + seconds + LOAD_ALLOWANCE_S
        while p.poll() is None and time.time() < deadline:
            time.sleep(0.5)
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
        try:
            _, err = p.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
            _, err = p.communicate()
        rows = []
        if os.path.exists(events):
            with open(events) as f:
                rows = [json.loads(line) for line in f if line.strip()]
    stream = [e for e in rows if e.get("event") == "verdict_changed" and e.get("scope") == "stream"]
    summary = next((e for e in rows if e.get("event") == "summary"), None)
    if not stream or summary is None:
        raise RuntimeError(f"{clip}: no stream verdict or no summary; stderr:\n{err[-2000:]}")
    t0 = stream[0]["t_ms"]
    t1 = summary["t_ms"]
    minutes = max(t1 - t0, 1) / 60000.0
    flips = sum(1 for e in stream[1:]
                if {e.get("previous"), e.get("label")} == {"real", "fake"})
    unknown = sum(1 for e in stream[1:] if "unknown" in (e.get("previous"), e.get("label")))
    labels = [e["label"] for e in stream]
    return {
        "clip": os.path.basename(clip),
        "minutes": minutes,
        "flips": flips,
        "flips_per_min": flips / minutes,
        "unknown_changes": unknown,
        "analyzed_fps": summary.get("analyzed_fps"),
        "final_label": summary.get("label"),
        "final_score": summary.get("score"),
        "labels": labels,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("clips", nargs="+")
    ap.add_argument("--fakewatch", default="target/release/fakewatch")
    ap.add_argument("--bundle")
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--json", help="write the rows here")
    ap.add_argument("extra", nargs=argparse.REMAINDER,
                    help="after --: more `fakewatch run` flags")
    a = ap.parse_args()
    extra = [x for x in a.extra if x != "--"]
    rows = []
    print(f"{'clip':40s} {'min':>5s} {'flips':>5s} {'/min':>6s} {'unk':>4s} {'fps':>5s}  final")
    for clip in a.clips:
        r = run_clip(a.fakewatch, a.bundle, clip, a.seconds, extra)
        rows.append(r)
        score = r["final_score"]
        print(f"{r['clip']:40s} {r['minutes']:5.2f} {r['flips']:5d} {r['flips_per_min']:6.2f} "
              f"{r['unknown_changes']:4d} {r['analyzed_fps'] or 0:5.1f}  {r['final_label']} "
              f"{'-' if score is None else f'{score:.3f}'}", flush=True)
    total_min = sum(r["minutes"] for r in rows)
    total = sum(r["flips"] for r in rows)
    print(f"total: {total} real<->fake flips in {total_min:.1f} min = {total / total_min:.2f} per minute; "
          f"worst clip {max(r['flips_per_min'] for r in rows):.2f} per minute")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"rows": rows, "flips": total, "minutes": total_min}, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
