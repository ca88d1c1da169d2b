"""Validation curves per cell, from the completed runs' histories."""

from collections.abc import Mapping

import pandas as pd

from lora_ablate.labels import CELL
from lora_ablate.records import LoadedRecord, Status


def curves_frame(loaded: list[LoadedRecord], runs: pd.DataFrame,
                 metric: str | Mapping[str, str]) -> pd.DataFrame:
    """Validation curves per cell: mean, std and count over seeds of val/<name> at each
    step of the completed runs' history, where test/<name> is the compared metric; the
    `metric` column names val/<name> (the figure's axis says which way is better)."""
    done = runs[runs["status"].eq(Status.completed)]
    index, steps, values, names = [], [], [], []
    for i, task in zip(done.index, done["task"]):
        name = metric.get(task) if isinstance(metric, Mapping) else metric
        if not name:
            continue
        key = "val/" + name.split("/", 1)[-1]
        for point in (loaded[i].record.history if loaded[i].record else ()):
            value, step = point.get(key), point.get("step")
            if value is not None and step is not None:
                index.append(i)
                steps.append(step)
                values.append(value)
                names.append(key)
    points = pd.DataFrame({"step": steps, "value": values, "metric": names},
                          index=pd.Index(index, dtype="int64"))
    points = points.join(done[list(CELL)])
    curves = points.groupby([*CELL, "metric", "step"], dropna=False, sort=True)["value"].agg(
        ["mean", "std", "count"]).reset_index()
    return curves
