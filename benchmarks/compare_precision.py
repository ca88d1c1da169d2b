"""Paired fp32 vs bf16 comparison of sweep cells: the same (target set, seed) in two sweep
folders, test accuracy per cell, the bf16 - fp32 difference against the seed spread.

    python benchmarks/compare_precision.py /tmp/bf16cmp/fp32 /tmp/bf16cmp/bf16 [--metric test/accuracy]

Prints a Markdown table (for benchmarks/README.md) and per-cell training seconds."""

import argparse
import json
import statistics
from pathlib import Path


def cells(folder: Path) -> dict[tuple[str, int], dict]:
    out = {}
    for path in folder.glob("*/result.json"):
        record = json.loads(path.read_text())
        if record.get("status") == "completed":
            out[(record["labels"]["target_set"], record["labels"]["seed"])] = record
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("fp32", type=Path)
    p.add_argument("bf16", type=Path)
    p.add_argument("--metric", default="test/accuracy")
    args = p.parse_args()
    a, b = cells(args.fp32), cells(args.bf16)
    keys = sorted(set(a) & set(b))
    if not keys:
        raise SystemExit("no (target set, seed) cell completed in both folders")
    targets = sorted({t for t, _ in keys})
    seeds = sorted({s for _, s in keys})
    m = args.metric
    print(f"| target set | " + " | ".join(f"seed {s}: fp32 / bf16 / Δ" for s in seeds) + " | mean Δ | seed SD fp32 | seed SD bf16 |")
    print("|---|" + "---|" * (len(seeds) + 3))
    diffs = []
    for t in targets:
        row, ds = [], []
        for s in seeds:
            if (t, s) not in a or (t, s) not in b:
                row.append("–")
                continue
            x, y = a[(t, s)]["metrics"][m], b[(t, s)]["metrics"][m]
            ds.append(y - x)
            row.append(f"{x:.3f} / {y:.3f} / {y - x:+.3f}")
        diffs += ds
        def sd(r):
            values = [r[(t, s)]["metrics"][m] for s in seeds if (t, s) in r]
            return statistics.stdev(values) if len(values) > 1 else float("nan")

        print(f"| {t} | " + " | ".join(row) + f" | {statistics.mean(ds):+.4f} | {sd(a):.4f} | {sd(b):.4f} |")
    if diffs:
        print(
            f"\n{len(diffs)} paired cells: mean Δ {statistics.mean(diffs):+.4f}, mean |Δ| "
            f"{statistics.mean(abs(d) for d in diffs):.4f}, max |Δ| {max(abs(d) for d in diffs):.4f}"
        )
    for name, r in (("fp32", a), ("bf16", b)):
        secs = [r[k]["cost"]["train_seconds"] for k in keys]
        if secs:
            print(f"{name}: train_seconds per cell median {statistics.median(secs):.1f} (loop only, wall, shared machine)")


if __name__ == "__main__":
    main()
