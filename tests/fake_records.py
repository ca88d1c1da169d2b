"""Synthetic sweeps for tests and benchmarks: run records in the exact result.json format,
with a known effect per target set so tests can check the statistics against the truth.

The test metric of a run is `base + effects[target_set] + seed_offset[seed] + noise * N(0,1)`;
the seed offset is shared by all target sets of a seed, as a real seed shares data order
and initialisation, which is what makes the paired comparison the right one.
"""

import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

LAYERS, HIDDEN, FFN = 12, 384, 1536  # a MiniLM-L12-H384-like BERT
SHAPES = MappingProxyType({
    "q": (HIDDEN, HIDDEN), "k": (HIDDEN, HIDDEN), "v": (HIDDEN, HIDDEN), "o": (HIDDEN, HIDDEN),
    "ffn_up": (HIDDEN, FFN), "ffn_down": (FFN, HIDDEN)})
NAMED_SETS = MappingProxyType({
    "ffn": ("ffn_up", "ffn_down"), "qkv_ffn": ("q", "k", "v", "ffn_up", "ffn_down"),
    "all": ("q", "k", "v", "o", "ffn_up", "ffn_down")})
MODULE_PATHS = MappingProxyType({
    "q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
    "o": "attention.output.dense", "ffn_up": "intermediate.dense", "ffn_down": "output.dense"})
REFERENCE_PARAMS = LAYERS * 2 * 8 * (2 * HIDDEN)  # qv at r=8
START = datetime(2025, 1, 1, tzinfo=timezone.utc)


def target_matrices(target_set: str) -> list[str]:
    if target_set in NAMED_SETS:
        return list(NAMED_SETS[target_set])
    if not set(target_set) <= set("qkvo"):
        raise ValueError(f"fake sweeps know q/k/v/o combinations, ffn, qkv_ffn and all, "
                         f"not {target_set!r}")
    return list(target_set)  # "qv" -> ["q", "v"]


def make_plan(target_set: str, budget: str = "reference", scale: float = 1.0) -> dict[str, Any]:
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
    modules = [
        {"name": f"encoder.layer.{layer}.{MODULE_PATHS[m]}", "matrix": m, "layer": layer,
         "d_in": d_in, "d_out": d_out, "rank": r, "params": r * (d_in + d_out)}
        for (m, layer, d_in, d_out), r in zip(shapes, ranks)
    ]
    deviation = (actual - target) / target if target else 0.0
    return {"model_type": "bert", "targets": matrices,
            "budget": {"target": target, "actual": actual, "deviation": deviation},
            "modules": modules, "lora_params": actual, "head_params": HIDDEN * 2 + 2,
            "base_params": 33_360_000}


def make_config(model: str, task: str, target_set: str, budget: str, scale: float,
                seed: int) -> dict[str, Any]:
    return {
        "model": {"name": model, "name_or_path": "nreimers/MiniLM-L12-H384-uncased",
                  "revision": None, "trust_remote_code": False},
        "task": {"name": task, "source": "vader", "subset": task, "metric": "accuracy",
                 "num_labels": 2, "val_size": 500, "test_size": 2000, "data_seed": 1234,
                 "max_length": 64, "format": "auto"},
        "targets": {"matrices": target_matrices(target_set)},
        "budget": {"kind": budget, "reference_matrices": ["q", "v"], "reference_rank": 8,
                   "params": None, "scale": scale},
        "lora": {"rank": 8, "alpha_over_rank": 2.0, "use_rslora": False, "dropout": 0.0},
        "train": {"max_steps": 200, "batch_size": 32, "lr": 0.01, "eval_every": 20,
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


def make_record(*, model: str, task: str, target_set: str, budget: str, scale: float,
                seed: int, accuracy: float, history_points: int, index: int,
                rng: np.random.Generator, status: str = "completed") -> dict[str, Any]:
    """One run record in the result.json format of DESIGN.md."""
    plan = make_plan(target_set, budget, scale)
    run_id = f"budget.scale={scale},seed={seed},targets={target_set},task={task}"
    val = accuracy + float(rng.normal(0, 0.003))
    history = make_history(val, history_points, rng) if status == "completed" else []
    best = max(history, key=lambda h: h["val/accuracy"]) if history else None
    seconds = 40.0 + 10.0 * len(plan["modules"]) / LAYERS + float(rng.uniform(0, 5))
    started = START + timedelta(minutes=index)
    error = {"completed": None,
             "failed": {"type": "RuntimeError", "message": "CUDA out of memory (fake)"},
             "diverged": {"type": "FloatingPointError", "message": "loss is nan at step 40"}}
    metrics = {"test/accuracy": accuracy, "test/loss": 1.2 - accuracy,
               "val/accuracy": val, "val/loss": 1.2 - val} if status == "completed" else {}
    return {
        "status": status, "run_id": run_id,
        "labels": {"model": model, "task": task, "target_set": target_set, "budget": budget,
                   "budget_scale": scale, "seed": seed},
        "config": make_config(model, task, target_set, budget, scale, seed),
        "config_hash": hashlib.sha1(run_id.encode()).hexdigest()[:16],
        "plan": plan, "metrics": metrics,
        "best": {"step": best["step"], "val/accuracy": best["val/accuracy"]} if best else {},
        "history": history,
        "cost": {"train_seconds": seconds, "tokens_per_second": 200 * 32 * 64 / seconds,
                 "peak_memory_bytes": 300_000_000 + 50 * plan["lora_params"], "device": "cpu"},
        "provenance": {
            "versions": {"python": "3.11.9", "torch": "2.5.1", "transformers": "4.46.3",
                         "peft": "0.13.2", "lora_ablate": "0.1.0"},
            "git_commit": "0123456789abcdef0123456789abcdef01234567",
            "device_name": "cpu", "hostname": "fake-host",
            "started_at": started.isoformat(),
            "ended_at": (started + timedelta(seconds=seconds)).isoformat()},
        "error": error[status],
    }


def write_json(path: Path, record: Mapping[str, Any], indent: int | None = 2) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=indent, sort_keys=True))
    return path


def write_fake_sweep(root: Path, *, tasks: Iterable[str] = ("rt_sentiment",),
                     target_sets: Iterable[str] = ("q", "v", "qv"),
                     seeds: Iterable[int] = range(3),
                     effects: Mapping[str, float] | None = None, noise: float = 0.01,
                     seed: int = 0, model: str = "minilm", budget: str = "reference",
                     budget_scales: Iterable[float] = (1.0,), base: float = 0.8,
                     seed_spread: float = 0.02, history_points: int = 10,
                     fail_rate: float = 0.0) -> list[Path]:
    """Write one result.json per (task, budget_scale, target_set, seed) below `root` and
    return their paths. A `fail_rate` share of runs becomes failed or diverged."""
    rng = np.random.default_rng(seed)
    effects = effects or {}
    seeds = list(seeds)
    offsets = dict(zip(seeds, rng.normal(0, seed_spread, len(seeds))))
    paths = []
    for task_i, task in enumerate(tasks):
        for scale in budget_scales:
            for target_set in target_sets:
                for s in seeds:
                    accuracy = (base + 0.03 * task_i + effects.get(target_set, 0.0)
                                + 0.01 * math.log2(scale) + offsets[s] + noise * rng.normal())
                    roll = rng.uniform()
                    status = ("completed" if roll >= fail_rate else
                              "failed" if roll < fail_rate / 2 else "diverged")
                    record = make_record(
                        model=model, task=task, target_set=target_set, budget=budget,
                        scale=scale, seed=s, accuracy=float(min(1.0, max(0.0, accuracy))),
                        history_points=history_points, index=len(paths), rng=rng,
                        status=status)
                    run_dir = root / task / f"scale={scale}" / f"{target_set}-seed{s}"
                    paths.append(write_json(run_dir / "result.json", record))
    return paths
