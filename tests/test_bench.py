"""benchmarks/bench_train.py --quick runs end to end and reports every arm.

Never asserts on speed: timings on a shared machine say nothing about correctness."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ARMS = ("harness", "plain", "trainer", "full", "trainer_default")
SAME_BATCH_ARMS = ("harness", "plain", "trainer", "full")


@pytest.mark.slow
def test_quick_benchmark_reports_every_arm_with_finite_ratios(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "bench_train.py"),
            "--quick",
            "--startup-models",
            "tiny_bert",
            "--json",
            str(out),
        ],
        check=False,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=os.environ | {"TQDM_DISABLE": "1"},
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = proc.stdout
    for arm in ARMS:
        assert any(line.startswith(arm + " ") for line in table.splitlines()), f"no table row for {arm}:\n{table}"
    assert "harness/plain" in table and "harness/Trainer" in table and "MFU" in table

    result = json.loads(out.read_text())
    arms = result["summary"]["arms"]
    assert set(arms) == set(ARMS)
    tokens = {arms[a]["tokens"] for a in SAME_BATCH_ARMS}
    assert len(tokens) == 1 and tokens.pop() > 0, "the same-batch arms must train on the same tokens"
    default = arms["trainer_default"]
    assert 0 < default["tokens"] <= default["padded_tokens"]
    for arm in ARMS:
        row = arms[arm]
        for key in (
            "speed_vs_plain",
            "speed_vs_trainer",
            "speed_vs_trainer_default",
            "tokens_per_s",
            "examples_per_s",
            "mfu",
        ):
            assert math.isfinite(row[key]) and row[key] > 0, (arm, key, row[key])
        assert row["steps"] == result["args"]["steps"]
    assert arms["plain"]["n_train"] < arms["full"]["n_train"]
    for run in ("cold", "next_run"):  # start-up stages of a fresh process and of a second run in it
        stages = result["startup"]["tiny_bert"][run]
        assert 0 < stages["prepare"] < stages["start-up"], stages
    assert "import torch" in result["startup"]["tiny_bert"]["cold"]
    # precision=auto: where it resolves to bf16 the harness is also timed at fp32 in the same process
    speedup = result["summary"].get("precision_speedup")
    if result["summary"]["precision"] != "fp32":
        assert math.isfinite(speedup["wall"]) and speedup["wall"] > 0 and speedup["precision"] == "bf16"
        assert "precision=fp32" in table and result["summary"]["matmul"].startswith("bf16")
    else:
        assert speedup is None and result["summary"]["matmul"].startswith("fp32")
    ratio = result["summary"]["memory_ratio"]
    assert math.isfinite(ratio) and ratio > 0
