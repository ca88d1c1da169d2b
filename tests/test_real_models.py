"""The embedded models on real data (slow: minutes on a 2-core CPU)."""

import json
from pathlib import Path

import pytest

from cli_helpers import run_cli

pytestmark = pytest.mark.slow


def lora_ablate(*overrides: str, run_dir: Path) -> dict:
    result = run_cli([*overrides, f"hydra.run.dir={run_dir}"], run_dir.parent, timeout=1800)
    assert result.returncode == 0, result.explain()
    return json.loads((run_dir / "result.json").read_text())


def test_minilm_qv_on_rotten_tomatoes_beats_chance_and_repeats(tmp_path):
    command = ("model=minilm", "task=rt_sentiment", "targets=qv", "seed=0", "train.max_steps=60")
    first = lora_ablate(*command, run_dir=tmp_path / "first")
    assert first["status"] == "completed"
    assert first["metrics"]["test/accuracy"] > 0.70
    assert first["plan"]["lora_params"] == 6 * 8 * (384 + 384) * 2  # 6 layers, q and v, 384x384, r=8
    second = lora_ablate(*command, run_dir=tmp_path / "second")
    assert second["metrics"] == first["metrics"]


def test_smollm2_label_words_beat_chance(tmp_path):
    record = lora_ablate(
        "model=smollm2",
        "task=rt_sentiment",
        "targets=qv",
        "train.max_steps=30",
        "train.batch_size=8",
        "train.lr=2e-3",
        "task.val_size=100",
        "task.test_size=400",
        run_dir=tmp_path / "smol",
    )
    assert record["status"] == "completed"
    assert record["plan"]["head_params"] == 0  # answers through label words, no head
    assert record["metrics"]["test/accuracy"] > 0.6  # 400 balanced sentences: chance is 0.5 ± 0.05


def test_minilm_learns_diag_routing(tmp_path):
    """The routing task is learnable at the diagnostic sweep's 100 steps: test pairs only,
    balanced, so chance is 0.50 (± 0.011 for 2000 examples)."""
    command = ("model=minilm", "targets=qkv_ffn", "seed=0", "train.max_steps=100",
               "analysis.enabled=false")
    routing = lora_ablate("task=diag_routing", *command, run_dir=tmp_path / "routing")
    assert routing["status"] == "completed"
    assert routing["metrics"]["test/accuracy"] > 0.6
