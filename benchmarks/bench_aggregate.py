"""Time aggregation of a large synthetic sweep: find_records, runs_frame, summarize and the
full write_report, each separately.

    .venv/bin/python benchmarks/bench_aggregate.py [--records 10000] [--keep DIR]
    .venv/bin/python benchmarks/bench_aggregate.py --existing SWEEP_DIR

The target is the whole report for 10,000 records in at most 10 s on a 2-core CPU.
"""

import argparse
import math
import os
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fake_records import write_fake_sweep  # noqa: E402

from lora_ablate.report.runs import runs_frame  # noqa: E402
from lora_ablate.report.summary import summarize  # noqa: E402
from lora_ablate.records import find_records  # noqa: E402
from lora_ablate.report.render import write_report  # noqa: E402

TASKS = ("rt_sentiment", "amazon_sentiment", "bbc_topics")
TARGET_SETS = ("q", "k", "v", "o", "qk", "qv", "qkv", "qkvo", "ffn", "qkv_ffn", "all")


def timed(label: str, fn: Callable[[], Any]) -> Any:
    """Run fn; print its wall time and CPU time (this process and its figure workers), since
    wall time on a shared machine also counts other processes' load."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    start, cpu = time.perf_counter(), time.process_time()
    result = fn()
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    workers = (after.ru_utime + after.ru_stime) - (children.ru_utime + children.ru_stime)
    print(f"{label:<14} wall {wall:6.2f} s   cpu {cpu:6.2f} s   worker cpu {workers:6.2f} s")
    return result


def write_sweep(root: Path, records: int) -> None:
    seeds = math.ceil(records / (len(TASKS) * len(TARGET_SETS)))
    start = time.perf_counter()
    paths = write_fake_sweep(root, tasks=TASKS, target_sets=TARGET_SETS, seeds=range(seeds),
                             effects={"all": 0.02, "qkvo": 0.01, "q": -0.02}, noise=0.01,
                             history_points=10, fail_rate=0.01)
    print(f"wrote {len(paths)} records to {root} in {time.perf_counter() - start:.1f} s "
          f"({len(TASKS)} tasks x {len(TARGET_SETS)} target sets x {seeds} seeds)")


def bench(root: Path) -> None:
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    loaded = timed("find_records", lambda: find_records(root))
    runs = timed("runs_frame", lambda: runs_frame(loaded))
    timed("summarize", lambda: summarize(runs, metric="test/accuracy", baseline="qv"))
    timed("write_report", lambda: write_report(root, baseline="qv"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--keep", type=Path, default=None,
                        help="write the sweep here and keep it (default: a temp dir)")
    parser.add_argument("--existing", type=Path, default=None,
                        help="time an existing sweep directory instead of writing one")
    args = parser.parse_args()
    if args.existing:
        bench(args.existing)
    elif args.keep:
        write_sweep(args.keep, args.records)
        bench(args.keep)
    else:
        with tempfile.TemporaryDirectory(prefix="lora-ablate-bench-") as tmp:
            write_sweep(Path(tmp), args.records)
            bench(Path(tmp))


if __name__ == "__main__":
    main()
