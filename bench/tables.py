#!/usr/bin/env python3
"""Markdown tables from `fakewatch bench ... --json` output (one case per line).

    target/release/fakewatch bench --runs 3 --sizes 480p,720p --faces 1,4,10 \
        --scan --live --reference --python bench/.venv/bin/python --json > bench.json
    python3 bench/tables.py bench.json

Prints the stage table (ms, share of the frame, FLOP floor) and, where the run
measured them, the live / scan / reference table. Every figure comes from the
JSON; nothing is typed in.
"""

import json
import sys


def stages(cases):
    names = [s["stage"] for s in cases[0]["stages"]]
    print("| case | faces | cand. P/R/O | " + " | ".join(names) + " | total ms |")
    print("|---" * (len(names) + 4) + "|")
    for c in cases:
        cells = []
        for s in c["stages"]:
            if s["floor_ms"] >= 0.05:
                cells.append(f"{s['ms']:.1f} ({s['share'] * 100:.0f} %, ≥{s['floor_ms']:.1f})")
            else:
                cells.append(f"{s['ms']:.2f}")
        cand = "/".join(str(x) for x in c["candidates"])
        print(f"| {c['case']} | {c['faces']} | {cand} | " + " | ".join(cells)
              + f" | {c['total_ms']:.0f} |")


def live_scan(cases):
    print("| case | live fps (dropped of n) | analyses | first verdict ms | live peak RSS MiB "
          "| scan s/video | reference s/video (decode) | fakewatch ÷ reference "
          "| same detections (box px, det. score, P(fake)) |")
    print("|---" * 9 + "|")
    for c in cases:
        live, scan, ref = c.get("live"), c.get("scan"), c.get("reference")
        row = [c["case"]]
        if live:
            row += [f"{live['processed_fps']:.1f} ({live['dropped']} of {live['frames_in']})",
                    str(live["frames_analyzed"]),
                    f"{live['first_verdict_latency_ms']:.0f}",
                    f"{live['peak_rss_mib']:.0f}"]
        else:
            row += ["—"] * 4
        row.append(f"{scan['seconds_per_video']:.2f}" if scan else "—")
        if ref:
            a = ref["agreement"]
            same = "yes" if a["identical_within_1px_1e-4"] else "no"
            row += [f"{ref['seconds_per_video']:.2f} ({ref['decode_seconds_per_video']:.2f})",
                    f"{ref['speedup']:.2f}×",
                    f"{same} ({a['max_box_px']:.4f}, {a['max_score']:.1e}, {a['max_p_fake']:.1e})"]
        else:
            row += ["—"] * 3
        print("| " + " | ".join(row) + " |")


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: bench/tables.py BENCH.json")
    with open(sys.argv[1]) as f:
        cases = [json.loads(l) for l in f if l.strip().startswith("{")]
    cases = [c for c in cases if "stages" in c]
    if not cases:
        sys.exit("no bench cases in the file")
    peak = cases[0]["peak_flops_per_core"] / 1e9
    print(f"tract matmul peak {peak:.1f} GFLOP/s per core, {cases[0]['threads']} threads, "
          f"backend {cases[0]['backend']}, medians of {cases[0]['runs']} runs\n")
    stages(cases)
    if any(c.get("live") or c.get("scan") for c in cases):
        print()
        live_scan(cases)


if __name__ == "__main__":
    main()
