"""Which metric a sweep's comparison uses per task, and in which direction it is better."""

from typing import Any

import pandas as pd

from lora_ablate.config.metrics import DIRECTIONS
from lora_ablate.records import LoadedRecord, Status
from lora_ablate.report.runs import metric_columns

# Names of metrics the harness does not record (a user's own records) whose lower values are better.
LOWER_IS_BETTER = ("loss", "error", "perplexity", "ppl", "mse", "mae")


def is_higher_better(metric: str) -> bool:
    """The direction of a metric the harness records (config.metrics, the one home of the
    directions); for any other name a guess from the name: losses and errors are lower-better."""
    name = metric.rsplit("/", 1)[-1].lower()
    if name in DIRECTIONS:
        return DIRECTIONS[name] > 0
    return not any(part in name for part in LOWER_IS_BETTER)


def better_way(metric: str) -> str:
    """'lower is better' for a loss, 'higher is better' for a score (axis labels, verdicts)."""
    return f"{'higher' if is_higher_better(metric) else 'lower'} is better"


def axis_label(metric: Any, missing: str = "metric") -> str:
    """'test/loss (lower is better)': a figure's axis names its metric and its direction."""
    return f"{metric} ({better_way(metric)})" if isinstance(metric, str) and metric else missing


def _configured_metric(loaded: list[LoadedRecord], index: pd.Index) -> str | None:
    for i in index:
        record = loaded[i].record
        task = (record.config.get("task") if record else None) or {}
        name = task.get("metric") if isinstance(task, dict) else None
        if name:
            return name if name.startswith("test/") else f"test/{name}"
    return None


def resolve_metrics(loaded: list[LoadedRecord], runs: pd.DataFrame,
                    metric: str | None = None) -> dict[str, str]:
    """The metric to compare per task: `metric` when given, else the task's configured
    metric (`config.task.metric` as test/<name>), falling back to the first test/* metric
    that the task's completed runs recorded."""
    tasks = sorted(runs["task"].dropna().unique())
    if metric is not None:
        return dict.fromkeys(tasks, metric)
    tests = [c for c in metric_columns(runs) if c.startswith("test/")]
    out = {}
    for task in tasks:
        rows = runs[runs["task"].eq(task)]
        done = rows[rows["status"].eq(Status.completed)]
        recorded = [c for c in tests if done[c].notna().any()]
        configured = _configured_metric(loaded, done.index[:1].append(rows.index[:1]))
        if configured in recorded or not recorded:
            out[task] = configured or "test/accuracy"
        else:
            out[task] = recorded[0]
    return out
