#!/usr/bin/env python3
"""Leave-one-source-out table from trained bundles (issue 23), read from their bundle.json.

Each row is a prefix P with three bundles, P-both, P-real-fakes and P-self-blended, made by
`fakewatch-train fit` with "self_blended_test": true on the shared identity-disjoint DFDC split:

- in-domain DFDC test AUC and JPEG-q30 AUC: P-both;
- held-out DFDC fakes: P-self-blended (trained on self-blends only; its test keeps DFDC's fakes);
- held-out self-blends: P-real-fakes (trained on DFDC's fakes; its self-blended test);
- mean of the two held-out columns.

    python3 bench/loso.py target/bundles/faceres-ml-lbfgs target/bundles/lite0-ml-lbfgs ...

A name holding ``{}`` is a template for the setting instead of a prefix (other seeds):
``target/bundles/faceres-lite0-stats-lbfgs-{}-seed7``.
"""

import json
import sys
from pathlib import Path


def metrics(path):
    p = Path(f"{path}/bundle.json")
    if not p.exists():
        return None
    return json.loads(p.read_text()).get("metrics") or {}


def fmt(v):
    return "–" if v is None else f"{v:.4f}"


def main():
    print("| variant | DFDC test AUC | held-out DFDC fakes | held-out self-blends | LOSO mean | JPEG q30 |")
    print("|---|---|---|---|---|---|")
    for prefix in sys.argv[1:]:
        name = prefix if "{}" in prefix else prefix + "-{}"
        both, real, sbi = (metrics(name.format(s)) for s in ("both", "real-fakes", "self-blended"))
        test = both and both.get("auc")
        jpeg = both and (both.get("robustness") or {}).get("auc")
        held_dfdc = sbi and sbi.get("auc")
        held_sbi = real and (real.get("self_blended_test") or {}).get("auc")
        mean = (held_dfdc + held_sbi) / 2 if held_dfdc and held_sbi else None
        print(f"| {Path(prefix).name.replace('-{}', '')} | {fmt(test)} | {fmt(held_dfdc)} | {fmt(held_sbi)} | "
              f"{fmt(mean)} | {fmt(jpeg)} |")


if __name__ == "__main__":
    main()
