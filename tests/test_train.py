"""Training runs end to end on tiny random models and a small local data set."""

import csv
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from lora_ablate.config.schema import RunConfig, register_configs
from lora_ablate.errors import ConfigError
from lora_ablate.plan.resolve import resolve_run
from lora_ablate.records import RECORD_NAME
from lora_ablate.run.runner import identity, run

REPO = Path(__file__).resolve().parents[1]
POSITIVE = ["great", "wonderful", "moving", "brilliant", "funny", "sharp"]
NEGATIVE = ["dull", "awful", "boring", "clumsy", "tedious", "flat"]


def write_reviews(path: Path, n: int = 240, seed: int = 0, classes: int = 2) -> Path:
    rng = random.Random(seed)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["review", "sentiment"])
        for i in range(n):
            label = i % classes
            words = rng.sample(POSITIVE if label else NEGATIVE, 2)
            writer.writerow([f"film {i} was {words[0]} and {words[1]}", "pos" if label else "neg"])
    return path


def compose_run(overrides: list[str]) -> tuple[RunConfig, dict]:
    register_configs()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    container = OmegaConf.to_container(cfg, resolve=True)
    container.pop("hydra", None)
    return OmegaConf.to_object(cfg), container


def local_overrides(data: Path, model: str = "tiny_bert", steps: int = 6) -> list[str]:
    return [
        f"model={model}",
        "task=local",
        f"task.path={data}",
        "task.text_column=review",
        "task.label_column=sentiment",
        "task.val_size=40",
        "task.test_size=60",
        "task.max_length=48",
        "task.label_words=[' bad',' good']",
        "task.prompt='{text} Verdict:'",
        f"train.max_steps={steps}",
        "train.batch_size=16",
        "train.eval_every=3",
        "train.device=cpu",
        "train.precision=fp32",  # exact and machine-independent; bf16 has its own tests
    ]


def train_once(overrides: list[str], run_dir: Path) -> dict:
    run_cfg, container = compose_run(overrides)
    resolved = resolve_run(run_cfg)
    run(run_cfg, resolved, identity(run_cfg, container, run_dir, resolved.plan.target_set))
    return json.loads((run_dir / RECORD_NAME).read_text())


@pytest.fixture(scope="module")
def reviews(tmp_path_factory) -> Path:
    return write_reviews(tmp_path_factory.mktemp("data") / "reviews.csv")


def test_head_run_writes_a_complete_record_and_repeats_exactly(reviews, tmp_path):
    first = train_once(local_overrides(reviews), tmp_path / "a")
    assert first["status"] == "completed"
    for key in ("run_id", "config", "config_hash", "plan", "metrics", "history", "cost", "provenance", "labels"):
        assert key in first
    assert {"test/accuracy", "test/loss", "val/accuracy", "val/loss"} <= set(first["metrics"])
    assert [p["step"] for p in first["history"]] == [3, 6]
    assert first["cost"]["train_seconds"] > 0 and first["cost"]["tokens_per_second"] > 0
    assert first["cost"]["device"] == "cpu" and first["cost"]["peak_memory_bytes"] > 0
    assert first["provenance"]["versions"]["torch"] == torch.__version__
    assert first["plan"]["lora_params"] == first["plan"]["budget"]["actual"]
    assert abs(first["merge_max_abs_diff"]) < 1e-4  # merging the adapter changes no output
    assert first["error"] is None
    second = train_once(local_overrides(reviews), tmp_path / "b")
    assert second["metrics"] == first["metrics"]
    assert second["config_hash"] == first["config_hash"]


def test_completed_run_is_skipped_when_config_unchanged(reviews, tmp_path):
    record = train_once(local_overrides(reviews, steps=2), tmp_path)
    stamp = (tmp_path / RECORD_NAME).stat().st_mtime_ns
    again = train_once(local_overrides(reviews, steps=2), tmp_path)
    assert (tmp_path / RECORD_NAME).stat().st_mtime_ns == stamp
    assert again["metrics"] == record["metrics"]
    changed = train_once(local_overrides(reviews, steps=3), tmp_path)
    assert changed["config_hash"] != record["config_hash"]
    assert changed["cost"]["steps"] == 3


def test_different_seeds_differ(reviews, tmp_path):
    a = train_once(local_overrides(reviews) + ["seed=0"], tmp_path / "a")
    b = train_once(local_overrides(reviews) + ["seed=1"], tmp_path / "b")
    assert a["metrics"]["val/loss"] != b["metrics"]["val/loss"]


@pytest.mark.parametrize("model", ["tiny_llama", "tiny_gpt2"])
def test_decoder_label_words_run(reviews, tmp_path, model):
    record = train_once(local_overrides(reviews, model=model, steps=4) + ["targets=qv"], tmp_path)
    assert record["status"] == "completed"
    assert record["plan"]["head_params"] == 0
    assert 0.0 <= record["metrics"]["test/accuracy"] <= 1.0
    assert record["merge_max_abs_diff"] < 1e-3


def test_decoder_with_classification_head(reviews, tmp_path):
    record = train_once(local_overrides(reviews, model="tiny_llama", steps=2) + ["task.format=head"], tmp_path)
    assert record["status"] == "completed"
    assert record["plan"]["head_params"] == 64 * 2  # score: hidden 64 -> 2 labels, no bias


def test_exploding_loss_is_recorded_as_diverged(reviews, tmp_path):
    record = train_once(local_overrides(reviews, steps=12) + ["train.lr=1e30", "train.grad_clip=1e30"], tmp_path)
    assert record["status"] == "diverged"
    assert record["metrics"] == {}
    assert "NaN" in record["error"]["message"]


def test_adapter_saved_as_safetensors(reviews, tmp_path):
    train_once(local_overrides(reviews, steps=1) + ["save_adapter=true"], tmp_path)
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    assert not list((tmp_path / "adapter").glob("*.bin"))


def test_bad_training_input_raises_before_training(reviews, tmp_path):
    for bad in (["train.max_steps=0"], ["train.batch_size=0"], ["task.label_column=nope"]):
        with pytest.raises(ConfigError):
            train_once(local_overrides(reviews) + bad, tmp_path)
        assert not (tmp_path / RECORD_NAME).exists()


def test_single_class_training_set_is_rejected(tmp_path):
    data = write_reviews(tmp_path / "one.csv", classes=1)
    with pytest.raises(ConfigError, match="class"):
        train_once(local_overrides(data) + ["task.label_names=[neg,pos]"], tmp_path / "run")


def test_wandb_offline_run_writes_its_directory(reviews, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    record = train_once(local_overrides(reviews, steps=1) + ["logger=wandb"], tmp_path)
    assert record["status"] == "completed"
    assert list((tmp_path / "wandb").glob("offline-run-*"))


def test_cli_bad_input_is_one_paragraph_without_traceback(reviews, tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", WANDB_MODE="disabled")
    result = subprocess.run(
        [sys.executable, "-m", "lora_ablate", *local_overrides(reviews), "train.max_steps=0", f"hydra.run.dir={tmp_path}"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert result.returncode != 0
    assert "max_steps" in result.stderr and "0" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / RECORD_NAME).exists()


@pytest.mark.parametrize("model", ["tiny_bert", "tiny_llama"])
def test_evaluation_does_not_depend_on_how_rows_are_batched(reviews, model):
    """Padding and batch composition must not move a metric: one row per batch
    (train.eval_batch_size=1) scores exactly like the default batches."""
    from lora_ablate.run.session import prepare
    from lora_ablate.run.loop import evaluate

    cfg, _ = compose_run(local_overrides(reviews, model=model))
    resolved = resolve_run(cfg)
    session = prepare(cfg, resolved, torch.device("cpu"))
    lengths = {len(item.input_ids) for item in session.test_items}
    assert len(lengths) > 1, "the test needs rows of different lengths, or nothing is padded"
    batched = evaluate(session, session.test_items, "test")
    session.eval_batch_size = 1
    one_by_one = evaluate(session, session.test_items, "test")
    assert batched.keys() == one_by_one.keys()
    for name, value in batched.items():
        assert value == pytest.approx(one_by_one[name], abs=1e-5), name


def test_grad_clip_zero_trains_without_clipping(reviews):
    """train.grad_clip=0 means no clipping, not a zero gradient norm (which would
    leave every LoRA B matrix at its zero initialisation)."""
    from lora_ablate.run.loggers import NullLogger
    from lora_ablate.run.session import prepare
    from lora_ablate.run.loop import fit

    cfg, _ = compose_run(local_overrides(reviews, steps=3) + ["train.grad_clip=0", "train.eval_every=0"])
    resolved = resolve_run(cfg)
    session = prepare(cfg, resolved, torch.device("cpu"))
    lora_b = {n: p for n, p in session.model.named_parameters() if "lora_B" in n}
    assert lora_b and all(float(p.detach().abs().max()) == 0 for p in lora_b.values())
    fit(session, cfg.train, seed=cfg.seed, head_names=resolved.plan.head_modules, logger=NullLogger())
    assert all(float(p.detach().abs().max()) > 0 for p in lora_b.values())


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the dropped interrupt
def test_ctrl_c_swallowed_by_a_finaliser_still_stops_training():
    """A KeyboardInterrupt raised inside a __del__ is printed and dropped by Python; the
    training loop's checkpoint must still stop at the next step."""
    import gc
    import signal

    from lora_ablate.run.loop import interrupt_checkpoint

    class SignalledWhileCollected:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):  # the handler runs here, inside the finaliser
                pass

    with interrupt_checkpoint() as stop_if_interrupted:
        stop_if_interrupted()  # nothing received yet
        SignalledWhileCollected()  # collected at once: the interrupt is raised and dropped in __del__
        gc.collect()
        with pytest.raises(KeyboardInterrupt):
            stop_if_interrupted()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
