"""benchmarks/bench_split.py --quick runs end to end and reports every arm and both ratios.

Never asserts on speed: timings on a shared machine say nothing about correctness."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ARMS = ("fused", "split", "fused_frozen", "split_frozen")
RATIOS = ("split/fused", "split_frozen/fused_frozen")


@pytest.mark.slow
def test_quick_split_benchmark_reports_every_arm_and_same_logits(tmp_path):
    out = tmp_path / "bench_split.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "bench_split.py"), "--quick", "--json", str(out)],
        check=False,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=os.environ | {"TQDM_DISABLE": "1"},
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = proc.stdout
    for name in ARMS + RATIOS:
        assert any(line.startswith(name + " ") for line in table.splitlines()), f"no table row for {name}:\n{table}"

    result = json.loads(out.read_text())
    summary = result["summary"]
    assert set(summary["arms"]) == set(ARMS)
    tokens = {summary["arms"][a]["tokens"] for a in ARMS}
    assert len(tokens) == 1 and tokens.pop() > 0, "every arm must train on the same tokens"
    for arm in ARMS:
        row = summary["arms"][arm]
        assert math.isfinite(row["tokens_per_s"]) and row["tokens_per_s"] > 0, (arm, row)
        assert row["n_train"] > 0
    for rep in result["runs"]:
        assert set(rep) == set(ARMS)
        assert all(rep[a]["steps"] == result["args"]["steps"] for a in ARMS)
    # The frozen pair must differ only by the split: the same adapters on c_fc.
    assert summary["arms"]["split_frozen"]["n_train"] == summary["arms"]["fused_frozen"]["n_train"]
    assert set(summary["ratios"]) == set(RATIOS)
    for name in RATIOS:
        ratio = summary["ratios"][name]["wall"]
        assert math.isfinite(ratio) and ratio > 0, (name, ratio)
    # Splitting must not change the function the model computes.
    assert summary["logit_max_abs_diff"] < 1e-4
