"""Synthetic sweeps for tests and benchmarks: run records in the exact result.json format,
with a known effect per target set so tests can check the statistics against the truth.

The test accuracy of a run is `base + effects[target_set] + seed_offset[seed] + noise * N(0,1)`
(and, with an lr grid, minus `lr_penalty * log10(lr / best lr of the target set)**2`); the
seed offset is shared by all target sets of a seed, as a real seed shares data order and
initialisation, which is what makes the paired comparison the right one. Per-example
predictions reproduce that accuracy exactly: a run gets right the examples with the highest
`ease + run noise`, where `ease` is fixed per task, so runs agree on most examples as real
ones do. Records are `RunRecord`s written by `records.write_record`, as the runner does.
"""

import json
import math
import zlib
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from lora_ablate.identity import run_key
from lora_ablate.record_plan import Module, Plan, PlanBudget
from lora_ablate.target_sets import FFN as FFN_OPTION
from lora_ablate.target_sets import TARGET_SETS
from lora_ablate.report.staged import SeedPlan
from lora_ablate.report.sweep_manifest import Manifest, ManifestCell
from lora_ablate.records import (
    Cost, Identity, ModelIdentity, Provenance, RunError, RunRecord, SplitPredictions, Status, write_record,
)

LAYERS, HIDDEN, FFN = 12, 384, 1536  # a MiniLM-L12-H384-like BERT
SHAPES = MappingProxyType({
    "q": (HIDDEN, HIDDEN), "k": (HIDDEN, HIDDEN), "v": (HIDDEN, HIDDEN), "o": (HIDDEN, HIDDEN),
    "ffn_up": (HIDDEN, FFN), "ffn_down": (FFN, HIDDEN)})
BERT_FFN = ("ffn_up", "ffn_down")  # what `ffn` means on a BERT
MODULE_PATHS = MappingProxyType({
    "q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
    "o": "attention.output.dense", "ffn_up": "intermediate.dense", "ffn_down": "output.dense"})
REFERENCE_PARAMS = LAYERS * 2 * 8 * (2 * HIDDEN)  # qv at r=8
START = datetime(2025, 1, 1, tzinfo=timezone.utc)


def target_matrices(target_set: str) -> list[str]:
    if target_set in TARGET_SETS:
        return [m for name in TARGET_SETS[target_set] for m in (BERT_FFN if name == FFN_OPTION else (name,))]
    if not set(target_set) <= set("qkvo"):
        raise ValueError(f"fake sweeps know the targets options and q/k/v/o combinations, "
                         f"not {target_set!r}")
    return list(target_set)  # "kv" -> ["k", "v"]


def make_plan(target_set: str, budget: str = "reference", scale: float = 1.0) -> Plan:
    """A plan whose ranks fill the budget as closely as whole ranks allow (so ranks can
    differ between modules, e.g. 3–4)."""
    matrices = target_matrices(target_set)
    shapes = [(m, layer, *SHAPES[m]) for layer in range(LAYERS) for m in matrices]
    per_rank = sum(d_in + d_out for _, _, d_in, d_out in shapes)
    target = int(REFERENCE_PARAMS * scale) if budget != "none" else None
    base_rank = max(1, target // per_rank) if target else 8
    ranks = [base_rank] * len(shapes)
    actual = base_rank * per_rank
    for i, (_, _, d_in, d_out) in enumerate(shapes):
        if target and actual + d_in + d_out <= target:
            ranks[i] += 1
            actual += d_in + d_out
    modules = [Module(f"encoder.layer.{layer}.{MODULE_PATHS[m]}", m, layer, d_in, d_out, r, r * (d_in + d_out))
               for (m, layer, d_in, d_out), r in zip(shapes, ranks)]
    deviation = (actual - target) / target if target else 0.0
    return Plan(model_type="bert", target_set=target_set, targets=matrices,
                budget=PlanBudget(budget, target, actual, deviation), ranks=sorted(set(ranks)),
                layers=list(range(LAYERS)), layer_count=LAYERS, modules=modules, lora_params=actual,
                head_modules=["classifier"], head_params=HIDDEN * 2 + 2, base_params=33_360_000)


def make_config(model: str, task: str, target_set: str, budget: str, scale: float,
                seed: int, lr: float = 0.01, test_size: int = 2000,
                val_size: int = 500) -> dict[str, Any]:
    return {
        "model": {"name": model, "name_or_path": "nreimers/MiniLM-L12-H384-uncased",
                  "revision": None, "trust_remote_code": False},
        "task": {"name": task, "source": "vader", "subset": task, "metric": "accuracy",
                 "num_labels": 2, "val_size": val_size, "test_size": test_size,
                 "data_seed": 1234, "max_length": 64, "format": "auto"},
        "targets": {"matrices": target_matrices(target_set), "layers": "all"},
        "budget": {"kind": budget, "reference_matrices": ["q", "v"], "reference_rank": 8,
                   "params": None, "scale": scale},
        "lora": {"rank": 8, "alpha_over_rank": 2.0, "use_rslora": False, "dropout": 0.0},
        "train": {"max_steps": 200, "batch_size": 32, "lr": lr, "eval_every": 20,
                  "schedule": "linear", "device": "auto", "precision": "auto"},
        "logger": {"kind": "none", "project": "lora-ablate"},
        "seed": seed, "dry_run": False, "save_adapter": False, "sweep_name": "fake",
    }


def make_history(final_val: float, points: int, rng: np.random.Generator) -> list[dict]:
    steps = np.linspace(200 / points, 200, points).round().astype(int)
    rise = 1 - np.exp(-steps / 50)
    val = 0.5 + (final_val - 0.5) * rise + rng.normal(0, 0.005, points)
    return [{"step": int(s), "train/loss": float(0.7 * (1 - 0.6 * r)),
             "val/accuracy": float(a), "val/loss": float(1.2 - a)}
            for s, r, a in zip(steps, rise, val)]


def task_examples(task: str, split: str, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The fixed labels and ease of a task's split: the same in every run of the task."""
    rng = np.random.default_rng(zlib.crc32(f"{task}/{split}".encode()))
    return rng.integers(0, 2, size), rng.normal(0, 1, size)


def make_predictions(task: str, split: str, size: int, accuracy: float,
                     rng: np.random.Generator, *, collapsed: bool = False,
                     disagreement: float = 0.5) -> tuple[SplitPredictions, float]:
    """Predictions with exactly round(accuracy * size) correct, and that accuracy. A
    collapsed run predicts one class for every example."""
    labels, ease = task_examples(task, split, size)
    if collapsed:
        predicted = np.zeros(size, dtype=np.int64)
    else:
        k = int(np.clip(round(accuracy * size), 0, size))
        correct = np.zeros(size, dtype=bool)
        correct[np.argsort(-(ease + rng.normal(0, disagreement, size)))[:k]] = True
        predicted = np.where(correct, labels, 1 - labels)
    return (SplitPredictions(predicted.tolist(), labels.tolist()),
            float(np.mean(predicted == labels)))


def make_record(*, model: str, task: str, target_set: str, budget: str, scale: float,
                seed: int, accuracy: float, history_points: int, index: int,
                rng: np.random.Generator, status: str = Status.completed, lr: float | None = None,
                collapsed: bool = False, test_size: int = 2000, val_size: int = 500,
                val_accuracy: float | None = None) -> RunRecord:
    """One run record, as the runner makes it. `test_size` 0 leaves out the predictions
    (and the test metric is then `accuracy` itself)."""
    plan = make_plan(target_set, budget, scale)
    overrides = [f"model={model}", f"task={task}", f"targets={target_set}",
                 f"budget={budget}", f"budget.scale={scale}", f"seed={seed}"]
    overrides += [f"train.lr={lr}"] if lr is not None else []
    config = make_config(model, task, target_set, budget, scale, seed,
                         0.01 if lr is None else lr, test_size, val_size)
    key = run_key(config, target_set, overrides)
    val = (accuracy if val_accuracy is None else val_accuracy) + float(rng.normal(0, 0.003))
    done = status == Status.completed
    predictions, metrics = {}, {}
    if done:
        test, val = accuracy, val
        if test_size:
            test_p, test = make_predictions(task, "test", test_size, accuracy, rng,
                                            collapsed=collapsed)
            val_p, val = make_predictions(task, "val", val_size, val, rng, collapsed=collapsed)
            predictions = {"test": test_p, "val": val_p}
        elif collapsed:
            test, val = 0.5, 0.5
        metrics = {"test/accuracy": test, "test/loss": 1.2 - test, "val/accuracy": val,
                   "val/loss": 1.2 - val}
    history = make_history(val, history_points, rng) if done else []
    best = max(history, key=lambda h: h["val/accuracy"]) if history else None
    seconds = 40.0 + 10.0 * len(plan.modules) / LAYERS + float(rng.uniform(0, 5))
    started = START + timedelta(minutes=index)
    errors = {Status.failed: RunError("RuntimeError", "CUDA out of memory (fake)"),
              Status.diverged: RunError("FloatingPointError", "loss is nan at step 40"),
              Status.interrupted: RunError("KeyboardInterrupt", "SIGTERM at step 120")}
    return RunRecord(
        status=status, run_id=key.run_id, labels=key.labels, config=config,
        config_hash=key.config_hash, plan=plan, metrics=metrics, history=history,
        best={"step": best["step"], "val/accuracy": best["val/accuracy"]} if best else None,
        predictions=predictions, collapsed=collapsed and done,
        cost=Cost(train_seconds=seconds, steps=200, train_tokens=200 * 32 * 64,
                  tokens_per_second=200 * 32 * 64 / seconds,
                  peak_memory_bytes=300_000_000 + 50 * plan.lora_params, device="cpu",
                  precision="fp32"),
        provenance=Provenance(
            versions={"python": "3.11.9", "torch": "2.5.1", "transformers": "4.46.3",
                      "peft": "0.13.2", "lora_ablate": "0.1.0"},
            git_commit="0123456789abcdef0123456789abcdef01234567",
            device_name="cpu", hostname="fake-host",
            started_at=started.isoformat(),
            ended_at=(started + timedelta(seconds=seconds)).isoformat()),
        identity=Identity(ModelIdentity(name_or_path="nreimers/MiniLM-L12-H384-uncased"), data=f"vader:fake:{task}"),
        error=errors.get(status),
    )


def write_json(path: Path, record: Mapping[str, Any], indent: int | None = 2) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=indent, sort_keys=True))
    return path


def lr_effect(lr: float, best: float, penalty: float) -> float:
    """The accuracy an lr costs: `penalty` per squared decade away from the best lr."""
    return -penalty * math.log10(lr / best) ** 2


def write_fake_sweep(root: Path, *, tasks: Iterable[str] = ("rt_sentiment",),
                     target_sets: Iterable[str] = ("q", "v", "qv"),
                     seeds: Iterable[int] = range(3),
                     effects: Mapping[str, float] | None = None, noise: float = 0.01,
                     seed: int = 0, model: str = "minilm", budget: str = "reference",
                     budget_scales: Iterable[float] = (1.0,), base: float = 0.8,
                     seed_spread: float = 0.02, history_points: int = 10,
                     fail_rate: float = 0.0, collapse_rate: float = 0.0,
                     test_size: int = 2000, val_size: int = 500,
                     lrs: Iterable[float] | None = None,
                     best_lr: Mapping[str, float] | None = None, lr_penalty: float = 0.02,
                     manifest: bool = False) -> list[Path]:
    """Write one result.json per (task, budget_scale, target_set[, lr], seed) below `root`
    and return their paths. A `fail_rate` share of runs becomes failed or diverged, a
    `collapse_rate` share completes collapsed at chance. With `lrs`, every cell is run at
    each lr (a `train.lr` variant); `best_lr` maps target sets to their best lr (default
    0.001). `test_size` 0 writes no per-example predictions. `manifest` writes
    root/manifest.json listing the run folders."""
    rng = np.random.default_rng(seed)
    effects, best_lr = effects or {}, best_lr or {}
    seeds = list(seeds)
    offsets = dict(zip(seeds, rng.normal(0, seed_spread, len(seeds))))
    grid = [None] if lrs is None else list(lrs)
    paths = []
    for task_i, task in enumerate(tasks):
        for scale in budget_scales:
            for target_set in target_sets:
                for lr in grid:
                    shift = 0.0 if lr is None else lr_effect(
                        lr, best_lr.get(target_set, 0.001), lr_penalty)
                    for s in seeds:
                        accuracy = (base + 0.03 * task_i + effects.get(target_set, 0.0)
                                    + 0.01 * math.log2(scale) + shift + offsets[s]
                                    + noise * rng.normal())
                        roll = rng.uniform()
                        status = (Status.completed if roll >= fail_rate else
                                  Status.failed if roll < fail_rate / 2 else Status.diverged)
                        collapsed = status == Status.completed and rng.uniform() < collapse_rate
                        record = make_record(
                            model=model, task=task, target_set=target_set, budget=budget,
                            scale=scale, seed=s, accuracy=float(min(1.0, max(0.0, accuracy))),
                            history_points=history_points, index=len(paths), rng=rng,
                            status=status, lr=lr, collapsed=collapsed, test_size=test_size,
                            val_size=val_size)
                        lr_part = "" if lr is None else f"-lr{lr:g}"
                        run_dir = root / task / f"scale={scale}" / f"{target_set}{lr_part}-seed{s}"
                        paths.append(write_record(run_dir, record))
    if manifest:
        write_manifest(root, [p.parent for p in paths])
    return paths


def write_manifest(root: Path, run_dirs: Iterable[Path], name: str = "fake", *,
                   stages: Mapping[str, int] | None = None, seed_plan: SeedPlan | None = None) -> Path:
    """root/manifest.json naming these run folders (relative to root) as the sweep, written
    by the sweeper's Manifest type; `stages` by run folder and `seed_plan` for an adaptive
    sweep."""
    stages = stages or {}
    cells = []
    for folder in run_dirs:
        run_dir = str(Path(folder).relative_to(root))
        cells.append(ManifestCell(run_dir, stage=stages.get(run_dir)))
    return Manifest(name, START.isoformat(), tuple(cells), seed_plan=seed_plan).write(root)
