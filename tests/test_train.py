"""Training runs end to end on tiny random models and a small local data set."""

import csv
import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from lora_ablate.app.store import register_configs
from lora_ablate.config.schema import RunConfig
from lora_ablate.errors import ConfigError
from lora_ablate.plan.resolve import resolve_run
from lora_ablate.records import RECORD_NAME
from lora_ablate.records import read_record
from lora_ablate.run.runner import train

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
    run_cfg, _ = compose_run(overrides)
    train(run_cfg, run_dir=run_dir, overrides=overrides)
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


def test_record_says_whether_validation_was_still_improving(reviews, tmp_path):
    # Validation at step 3 of 6 lies before the last quarter; the rule compares the final
    # value with it against the binomial standard error of validation accuracy (40 examples).
    record = train_once(local_overrides(reviews), tmp_path)
    early = record["history"][0]["val/accuracy"]
    final = record["metrics"]["val/accuracy"]
    n = 40
    se = math.sqrt(final * (1 - final) / (n - 1))
    assert record["convergence"]["reference_step"] == 3
    assert record["convergence"]["gain"] == pytest.approx(final - early)
    assert record["convergence"]["tolerance"] == pytest.approx(se)
    assert record["convergence"]["still_improving"] == (final - early > se)
    # Without a validation curve the rule cannot say.
    flat = train_once([*local_overrides(reviews), "train.eval_every=0"], tmp_path / "flat")
    assert flat["convergence"]["still_improving"] is None


def test_completed_run_is_skipped_when_config_unchanged(reviews, tmp_path):
    record = train_once(local_overrides(reviews, steps=2), tmp_path)
    stamp = (tmp_path / RECORD_NAME).stat().st_mtime_ns
    again = train_once(local_overrides(reviews, steps=2), tmp_path)
    assert (tmp_path / RECORD_NAME).stat().st_mtime_ns == stamp
    assert again["metrics"] == record["metrics"]
    changed = train_once(local_overrides(reviews, steps=3), tmp_path)
    assert changed["config_hash"] != record["config_hash"]
    assert changed["cost"]["steps"] == 3
    # The first completed record was moved aside, not overwritten, and still reads back.
    aside = read_record(tmp_path / f"result.{record['config_hash']}.json").record
    assert aside is not None and aside.status == "completed" and aside.metrics == record["metrics"]
    # Going back to the first config finds that record and trains nothing.
    stamp = (tmp_path / RECORD_NAME).stat().st_mtime_ns
    back = train_once(local_overrides(reviews, steps=2), tmp_path)
    assert (tmp_path / RECORD_NAME).stat().st_mtime_ns == stamp and back["cost"]["steps"] == 3


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
    from cli_helpers import run_cli

    result = run_cli([*local_overrides(reviews), "train.max_steps=0", f"hydra.run.dir={tmp_path}"], tmp_path)
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
    assert batched.metrics.keys() == one_by_one.metrics.keys()
    for name, value in batched.metrics.items():
        assert value == pytest.approx(one_by_one.metrics[name], abs=1e-5), name
    # Predictions come back in the items' order, whatever the batches' order was.
    assert batched.predicted == one_by_one.predicted
    assert batched.labels == [item.label for item in session.test_items]


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

    from lora_ablate.run.interrupts import stop_signals

    class SignalledWhileCollected:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):  # the handler runs here, inside the finaliser
                pass

    with stop_signals() as stop_if_interrupted:
        stop_if_interrupted()  # nothing received yet
        SignalledWhileCollected()  # collected at once: the interrupt is raised and dropped in __del__
        gc.collect()
        with pytest.raises(KeyboardInterrupt):
            stop_if_interrupted()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_sigterm_records_the_run_as_interrupted_and_a_rerun_finishes_it(reviews, tmp_path, monkeypatch):
    """SIGTERM mid-training (a kill, a SLURM time limit) leaves a record that says
    interrupted; the same command again trains the cell to completion."""
    import signal

    from lora_ablate.run import runner
    from lora_ablate.run.interrupts import Interrupted
    from lora_ablate.run.loggers import NullLogger

    class TerminatedAtFirstLog(NullLogger):
        def log(self, values, step):
            os.kill(os.getpid(), signal.SIGTERM)

    overrides = local_overrides(reviews, steps=20)
    monkeypatch.setattr(runner, "open_logger", lambda cfg, **info: TerminatedAtFirstLog())
    with pytest.raises(Interrupted):
        train_once(overrides, tmp_path)
    stopped = json.loads((tmp_path / RECORD_NAME).read_text())
    assert stopped["status"] == "interrupted" and stopped["error"]["type"] == "Interrupted"
    assert 0 < stopped["cost"]["steps"] < 20
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # the handler is put back
    monkeypatch.undo()
    finished = train_once(overrides, tmp_path)
    assert finished["status"] == "completed" and finished["cost"]["steps"] == 20


def test_a_second_process_on_the_same_cell_is_turned_away(reviews, tmp_path):
    """Two processes training one cell into one folder: the second says who holds it."""
    from lora_ablate.run.interrupts import RunLock

    cfg, _ = compose_run(local_overrides(reviews, steps=2))
    with RunLock(tmp_path, "held"):
        code = ("import sys; sys.path.insert(0, 'tests'); from test_train import *; "
                f"cfg, _ = compose_run(local_overrides(Path({str(reviews)!r}), steps=2)); "
                f"train(cfg, run_dir=Path({str(tmp_path)!r}))")
        proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "RunLocked" in proc.stderr and "being trained right now" in proc.stderr
    assert f"pid {os.getpid()}" in proc.stderr
    assert not (tmp_path / RECORD_NAME).exists()
    assert train(cfg, run_dir=tmp_path).status == "completed"  # the lock is gone with its holder


def test_submitit_preemption_leaves_an_interrupted_record(reviews, tmp_path, monkeypatch):
    """Under submitit, SIGTERM is bypassed and SIGUSR2 requeues the job and calls
    sys.exit(-1) (submitit's JobEnvironment); the run in flight is recorded as interrupted,
    so the requeued job trains it again."""
    import signal
    import sys as _sys

    from lora_ablate.run import runner
    from lora_ablate.run.loggers import NullLogger

    requeued = []

    def submitit_usr2(signum, frame):  # what submitit's checkpoint_and_try_requeue ends with
        requeued.append(signum)
        _sys.exit(-1)

    previous = {s: signal.signal(s, h) for s, h in
                [(signal.SIGTERM, lambda s, f: None), (signal.SIGUSR2, submitit_usr2)]}
    try:
        class PreemptedAtFirstLog(NullLogger):
            def log(self, values, step):
                os.kill(os.getpid(), signal.SIGTERM)  # bypassed: training goes on
                os.kill(os.getpid(), signal.SIGUSR2)

        monkeypatch.setattr(runner, "open_logger", lambda cfg, **info: PreemptedAtFirstLog())
        with pytest.raises(SystemExit):
            train_once(local_overrides(reviews, steps=20), tmp_path)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    record = json.loads((tmp_path / RECORD_NAME).read_text())
    assert requeued and record["status"] == "interrupted" and record["error"]["type"] == "SystemExit"


def test_a_logger_that_fails_to_start_still_leaves_a_record(reviews, tmp_path, monkeypatch):
    """wandb.init raising (no network, bad entity) ends the run as failed, with a record."""
    import wandb

    def refuse(**kwargs):
        raise RuntimeError("wandb could not start (simulated)")

    monkeypatch.setattr(wandb, "init", refuse)
    with pytest.raises(RuntimeError, match="simulated"):
        train_once(local_overrides(reviews, steps=2) + ["logger=wandb"], tmp_path)
    record = json.loads((tmp_path / RECORD_NAME).read_text())
    assert record["status"] == "failed" and "simulated" in record["error"]["message"]


def test_wandb_gets_the_plan_and_a_failed_exit_code_for_a_diverged_run(reviews, tmp_path, monkeypatch):
    import wandb

    calls = {}

    class FakeRun:
        summary: dict = {}

        def log(self, values, step=None):
            calls.setdefault("logged", []).append(values)

        def finish(self, exit_code=0):
            calls["exit_code"] = exit_code

    monkeypatch.setattr(wandb, "init", lambda **kwargs: FakeRun())
    record = train_once(local_overrides(reviews, steps=10) + ["logger=wandb", "train.lr=1e30",
                                                              "train.grad_clip=0"], tmp_path)
    assert record["status"] == "diverged" and calls["exit_code"] == 1
    plan_table = calls["logged"][0]["plan"]
    assert len(plan_table.data) == len(record["plan"]["modules"])
    assert FakeRun.summary["lora_params"] == record["plan"]["lora_params"]
