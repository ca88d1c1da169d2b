"""Per-example correctness of runs, for comparisons example by example.

Every run of a task scores the same test examples in the same order; that is checked
here (the true labels must be equal) before any two runs are paired.
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from lora_ablate.records import LoadedRecord

ACCURACY_TOLERANCE = 1e-6  # predictions must reproduce the recorded accuracy to this


@dataclass
class Correctness:
    """Per-example correctness (bool arrays) by row index of the runs frame, for the runs
    whose predictions can be paired; `problems` says why the others cannot."""

    split: str
    by_run: dict[int, np.ndarray] = field(default_factory=dict)
    labels: dict[int, int] = field(default_factory=dict)  # run -> id of its label vector
    problems: dict[int, str] = field(default_factory=dict)

    def pairable(self, runs: Iterable[int]) -> bool:
        """Whether these runs all have predictions over the same labelled examples."""
        runs = list(runs)
        return bool(runs) and all(i in self.by_run for i in runs) and len(
            {self.labels[i] for i in runs}) == 1


def _as_array(ids: Sequence[int]) -> np.ndarray:
    return np.asarray(ids, dtype=np.int64)


def correctness(loaded: Sequence[LoadedRecord], index: Iterable[int], *, split: str = "test",
                metric: str | None = None) -> Correctness:
    """Correctness of the runs at `index` (positions in `loaded`) on `split`. With a
    `metric` such as test/accuracy, a run whose predictions do not reproduce its recorded
    accuracy is left out (its predictions describe some other evaluation)."""
    out = Correctness(split)
    label_ids: dict[bytes, int] = {}
    for i in index:
        record = loaded[i].record
        predictions = record.predictions.get(split) if record else None
        if predictions is None or not predictions.labels:
            out.problems[i] = f"no {split} predictions"
            continue
        labels = _as_array(predictions.labels)
        correct = _as_array(predictions.predicted) == labels
        if metric and metric.rsplit("/", 1)[-1] == "accuracy":
            recorded = record.metrics.get(metric)
            if recorded is None or abs(float(correct.mean()) - recorded) > ACCURACY_TOLERANCE:
                out.problems[i] = (f"{split} predictions give accuracy {correct.mean():.4f}, "
                                   f"the record says {recorded}")
                continue
        out.by_run[i] = correct
        out.labels[i] = label_ids.setdefault(labels.tobytes(), len(label_ids))
    return out
