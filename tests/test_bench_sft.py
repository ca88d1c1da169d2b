"""benchmarks/bench_sft.py: a few steps on tiny_llama run every arm on the same batches and
print the three rates and both ratios; bad arguments are one message before anything loads.

Never asserts on speed: timings on a shared machine say nothing about correctness."""

import importlib.util
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "bench_sft.py"
ARMS = ("harness", "plain", "trl")
NUMBER = r"([0-9][0-9,]*\.?[0-9]*)"


def bench_module():
    spec = importlib.util.spec_from_file_location("bench_sft", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_pairs(path: Path, n: int = 80) -> Path:
    path.write_text("".join(json.dumps({"prompt": f"What is {i} plus {2 * i}?\nAnswer:", "completion": f" {3 * i}"})
                            + "\n" for i in range(n)))
    return path


@pytest.mark.parametrize("task", [["local"], ["local", "a.jsonl", "b.jsonl"], ["bbc_headlines", "x.jsonl"]])
def test_a_task_that_is_neither_a_name_nor_local_file_is_refused(task, capsys):
    with pytest.raises(SystemExit) as stop:
        bench_module().parse_args(["--task", *task])
    assert stop.value.code == 2
    assert "--task local FILE" in capsys.readouterr().err


def test_an_unknown_task_names_the_tasks_there_are():
    with pytest.raises(SystemExit, match=r"--task no_such_task: no such task in this checkout \(tasks: .*local"):
        bench_module().overrides(bench_module().parse_args(["--task", "no_such_task"]))


@pytest.mark.slow
def test_a_few_steps_on_tiny_llama_print_three_rates_and_two_ratios(tmp_path):
    pytest.importorskip("trl")
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--model", "tiny_llama", "--task", "local", str(write_pairs(tmp_path / "p.jsonl")),
         "--steps", "2", "--warmup-steps", "1", "--batch-size", "4", "--repeats", "2", "--json", str(out)],
        check=False, capture_output=True, text=True, cwd=tmp_path, timeout=900,
        env=os.environ | {"TQDM_DISABLE": "1", "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    for arm in ARMS:  # ms/step, tokens/s, cpu ms/step, cpu tokens/s
        row = [line for line in lines if re.match(rf"{arm} +{NUMBER} +{NUMBER} +{NUMBER} +{NUMBER}$", line)]
        assert len(row) == 1, f"no rate row for {arm}:\n{proc.stdout}"
        assert all(float(v.replace(",", "")) > 0 for v in row[0].split()[1:])
    for label in ("TRL", "plain"):
        ratio = re.search(rf"^harness/{label} = {NUMBER}x tokens/s .* {NUMBER}x .* by CPU time", proc.stdout, re.M)
        assert ratio, f"no harness/{label} ratio:\n{proc.stdout}"
        assert all(math.isfinite(float(v)) and float(v) > 0 for v in ratio.groups())
    assert re.search(r"^cpu: .+ logical cores", proc.stdout, re.M)
    assert re.search(r"^versions: .*torch .* transformers .* peft .* trl ", proc.stdout, re.M)

    result = json.loads(out.read_text())
    arms = result["summary"]["arms"]
    # The byte tokenizer cuts prompt+completion exactly where the harness does: TRL must have
    # trained on the very same tokens, and every arm on the same LoRA parameters.
    assert arms["harness"]["tokens"] == arms["plain"]["tokens"] == arms["trl"]["tokens"] > 0
    assert arms["harness"]["completion_tokens"] == arms["trl"]["completion_tokens"] > 0
    assert len({arms[a]["trainable"] for a in ARMS}) == 1
    assert [list(rep) for rep in result["runs"]] == [list(ARMS), list(reversed(ARMS))]  # the order alternates
