"""Per-example values of runs, for comparisons example by example.

A metric that is a mean over a split's examples gets one value per example whose mean over
the examples reproduces the recorded metric (checked per run, to TOLERANCE):

- accuracy (classification): each example's 0/1 correctness (predicted == label);
- exact_match (SFT with a checkable answer): the record's 0/1 exact-match bits;
- loss (SFT): nll_i / mean(tokens), since the loss is token-weighted (Σ nll / Σ tokens);
- token_accuracy (SFT): correct_i / mean(tokens), for the same reason.

Perplexity (exp of the loss) and macro-F1 are not means of per-example values, so their
comparisons pair on seeds only. Every run of a task scores the same examples in the same
order; that is checked here (equal true labels, or for SFT equal completion token counts)
before any two runs are paired.
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from lora_ablate.records import LoadedRecord, RunRecord

TOLERANCE = 1e-6  # per-example values must reproduce the recorded metric to this (relative above 1)
BINARY = ("accuracy", "exact_match")  # 0/1 per-example values: McNemar applies
FROM_EXAMPLE_LOSSES = ("loss", "token_accuracy", "exact_match")  # SFT records' ExampleLosses
PER_EXAMPLE = ("accuracy", *FROM_EXAMPLE_LOSSES)
# Metrics a record holds that are no mean of per-example values: why their comparisons
# pair on seeds only.
NOT_A_MEAN = {
    "perplexity": "perplexity is exp of the token-weighted mean loss, not a mean of "
                  "per-example values",
}


def metric_name(metric: str) -> str:
    """"loss" from "test/loss"."""
    return metric.rsplit("/", 1)[-1]


@dataclass
class ExampleValues:
    """Per-example values (float arrays whose mean is the run's recorded `metric`) by row
    index of the runs frame, for the runs that can be paired; `problems` says why the
    others cannot. `examples` names, per run, the example set it scored (an id of its true
    labels, or of its completion token counts): only runs with the same id are paired."""

    split: str
    metric: str = ""
    binary: bool = True  # 0/1 values (accuracy, exact match): McNemar applies
    by_run: dict[int, np.ndarray] = field(default_factory=dict)
    examples: dict[int, int] = field(default_factory=dict)  # run -> id of its example set
    problems: dict[int, str] = field(default_factory=dict)

    @property
    def identity(self) -> str:
        """What `examples` compares: the true labels, or the completion token counts."""
        return "completion token counts" if metric_name(self.metric) in FROM_EXAMPLE_LOSSES \
            else "labels"

    def pairable(self, runs: Iterable[int]) -> bool:
        """Whether these runs all have values over the same examples."""
        runs = list(runs)
        return bool(runs) and all(i in self.by_run for i in runs) and len(
            {self.examples[i] for i in runs}) == 1


def _predictions(record: RunRecord, split: str) -> tuple[np.ndarray, bytes] | str:
    predictions = record.predictions.get(split)
    if predictions is None or not predictions.labels:
        return f"no {split} predictions"
    labels = np.asarray(predictions.labels, dtype=np.int64)
    correct = np.asarray(predictions.predicted, dtype=np.int64) == labels
    return correct.astype(np.float64), labels.tobytes()


def _example_losses(record: RunRecord, split: str, name: str) -> tuple[np.ndarray, bytes] | str:
    losses = record.example_losses.get(split)
    if losses is None or not losses.tokens:
        return f"no {split} per-example losses"
    tokens = np.asarray(losses.tokens, dtype=np.int64)
    if tokens.sum() <= 0:
        return f"no {split} completion tokens"
    if name == "exact_match":
        bits = list(getattr(losses, "exact_match", None) or [])
        if len(bits) != len(tokens):
            return (f"no {split} exact-match bits" if not bits else
                    f"{len(bits)} {split} exact-match bits for {len(tokens)} examples")
        return np.asarray(bits, dtype=np.float64), tokens.tobytes()
    # Σ_i x_i / m = Σ nll / Σ tokens: the token-weighted metric as a plain mean over examples
    summed = losses.nll if name == "loss" else losses.correct
    return np.asarray(summed, dtype=np.float64) / float(tokens.mean()), tokens.tobytes()


def _reproduces(values: np.ndarray, recorded: float | None) -> bool:
    if recorded is None or not np.isfinite(recorded) or not len(values):
        return False
    return abs(float(values.mean()) - recorded) <= TOLERANCE * max(1.0, abs(recorded))


def example_values(loaded: Sequence[LoadedRecord], index: Iterable[int],
                   metric: str) -> ExampleValues | None:
    """Per-example values of `metric` ("<split>/<name>") for the runs at `index` (positions
    in `loaded`); None when the metric is no mean of per-example values (NOT_A_MEAN,
    macro-F1, names the harness does not record). A run whose values do not reproduce its
    recorded metric is left out (they describe some other evaluation), and so is a
    classification run asked for an SFT metric (its record keeps no per-example losses;
    its comparisons pair on seeds as a metric without per-example values does)."""
    split, name = (metric.split("/", 1) + [""])[:2] if "/" in metric else ("test", metric)
    if name not in PER_EXAMPLE:
        return None
    out = ExampleValues(split, metric, binary=name in BINARY)
    ids: dict[bytes, int] = {}
    for i in index:
        record = loaded[i].record
        if record is None:
            out.problems[i] = "no record"
            continue
        if name in FROM_EXAMPLE_LOSSES and not record.example_losses and record.predictions:
            continue  # a classification run: no per-example losses exist
        found = (_example_losses(record, split, name) if name in FROM_EXAMPLE_LOSSES
                 else _predictions(record, split))
        if isinstance(found, str):
            out.problems[i] = found
            continue
        values, key = found
        recorded = record.metrics.get(metric)
        if not _reproduces(values, recorded):
            mean = float(values.mean()) if len(values) else float("nan")
            out.problems[i] = (f"{split} per-example values give {name} {mean:.4f}, "
                               f"the record says {recorded}")
            continue
        out.by_run[i] = values
        out.examples[i] = ids.setdefault(key, len(ids))
    return out
