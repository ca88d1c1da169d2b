"""Run records -> the runs frame: one row per record with its labels, plan, cost,
provenance and metrics, typed columns (RUN_COLUMNS, then the metrics).

`record_frames` splits a sweep's records into the runs that count (one per (cell, seed):
the newest completed), the records they supersede and records outside the sweep's
manifest; `runs_frame` is the first of these.
"""

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from lora_ablate.labels import LABELS
from lora_ablate.records import CORRUPT, LoadedRecord, RunRecord, Status
from lora_ablate.report.sweep_manifest import MANIFEST_NAME, Manifest, read_manifest

# LABELS come from labels.Labels; the runs frame's `variant` is its text (e.g.
# train.lr=0.001), "" for none.
COST = ("train_seconds", "tokens_per_second", "peak_memory_bytes")
NUMERIC = ("budget_scale", "lora_params", "head_params", "base_params", "budget_target",
           "budget_actual", "budget_deviation", *COST, "best_step")
RUN_COLUMNS = ("path", "run_id", "status", "collapsed", "still_improving", *LABELS, "targets", "lora_rank",
               "lora_params", "head_params", "base_params", "budget_target", "budget_actual",
               "budget_deviation", *COST, "device", "best_step", "git_commit", "device_name",
               "hostname", "started_at", "ended_at", "config_hash", "error")


def _record_row(rec: RunRecord) -> dict[str, Any]:
    plan, cost, prov = rec.plan, rec.cost, rec.provenance
    row = {
        "run_id": rec.run_id, "status": rec.status.value, "collapsed": bool(rec.collapsed),
        "still_improving": None if rec.convergence is None else rec.convergence.still_improving,
        **rec.labels.row(),
        "targets": ",".join(plan.targets) or None,
        "lora_rank": plan.rank_text(),
        "lora_params": plan.lora_params, "head_params": plan.head_params, "base_params": plan.base_params,
        "budget_target": plan.budget.target, "budget_actual": plan.budget.actual,
        "budget_deviation": plan.budget.deviation,
        **{k: getattr(cost, k) for k in COST}, "device": cost.device,
        "best_step": (rec.best or {}).get("step"),
        "git_commit": prov.git_commit, "device_name": prov.device_name, "hostname": prov.hostname,
        "started_at": prov.started_at, "ended_at": prov.ended_at,
        "config_hash": rec.config_hash,
        "error": f"{rec.error.type}: {rec.error.message}".strip() if rec.error else None,
    }
    # Metric keys are split/name; anything else could clobber a fixed column. A NaN or
    # infinite value (a hand-edited or foreign record) is left out, so the run counts as
    # lacking that metric, and named in the row's error column.
    metrics = {k: v for k, v in rec.metrics.items() if "/" in k}
    nonfinite = sorted(k for k, v in metrics.items() if not math.isfinite(v))
    row.update({k: v for k, v in metrics.items() if k not in nonfinite})
    if nonfinite:
        note = f"not finite, left out: {', '.join(f'{k}={metrics[k]}' for k in nonfinite)}"
        row["error"] = f"{row['error']}; {note}" if row["error"] else note
    return row


def _row(item: LoadedRecord, prefix: str) -> dict[str, Any]:
    path = str(item.path)
    path = path[len(prefix):] if prefix and path.startswith(prefix) else path
    if item.record is None:
        return {"path": path, "status": CORRUPT, "error": item.problem}
    try:
        return {"path": path, **_record_row(item.record)}
    except (AttributeError, TypeError, ValueError) as err:  # valid JSON, wrong shape
        return {"path": path, "status": CORRUPT, "error": f"malformed record ({err})"}


def metric_columns(frame: pd.DataFrame) -> list[str]:
    """Metric columns (split/name), test/* first."""
    names = [c for c in frame.columns if "/" in c]
    return sorted(names, key=lambda c: (not c.startswith("test/"), c))


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.reindex(columns=[*RUN_COLUMNS, *metric_columns(frame)])
    for column in (*NUMERIC, *metric_columns(frame)):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
    frame["seed"] = pd.to_numeric(frame["seed"], errors="coerce").astype("Int64")
    frame["collapsed"] = frame["collapsed"].astype("boolean")
    frame["still_improving"] = frame["still_improving"].astype("boolean")
    return frame


@dataclass
class RecordFrames:
    """A sweep's records split three ways (all with the runs frame's columns, indexed by
    position in the loaded list): `runs`, one per (cell, seed), the newest completed one
    (else the newest), plus corrupt files; `superseded`, older records of a (cell, seed)
    that `runs` holds; `other`, records outside the manifest's run folders."""

    runs: pd.DataFrame
    superseded: pd.DataFrame
    other: pd.DataFrame
    manifest: Manifest | None = None
    notes: list[str] = field(default_factory=list)


def _in_manifest(paths: pd.Series, manifest: Manifest) -> pd.Series:
    prefixes = tuple(f"{d}/" for d in manifest.run_dirs if d)
    return paths.astype(str).str.startswith(prefixes) if prefixes else paths.map(lambda _: False)


def _current(frame: pd.DataFrame, manifest: Manifest | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Keep one row per (cell, seed): a record of the cell's current config (the manifest's
    hash for its run folder) beats the others, then a completed one, then the newest."""
    real = frame["status"].ne(CORRUPT)
    hashes = manifest.config_hashes if manifest is not None else {}
    current = frame["path"].astype(str).str.rpartition("/")[0].map(hashes).eq(frame["config_hash"])
    order = frame[real].assign(
        _current=current[real], _done=frame["status"].eq(Status.completed),
        _end=frame["ended_at"].fillna("").astype(str)
    ).sort_values(["_current", "_done", "_end", "path"])
    keep = order.drop_duplicates(list(LABELS), keep="last").index.union(frame.index[~real])
    return frame.loc[frame.index.isin(keep)], frame.loc[~frame.index.isin(keep)]


def record_frames(loaded: list[LoadedRecord], *, root: Any = None,
                  manifest: Manifest | None = None) -> RecordFrames:
    """Split `loaded` (find_records of a sweep folder) into runs, superseded and other
    records. With `root`, paths are relative to it, and root/manifest.json (when there is
    one and `manifest` is not given) decides which records are the sweep's."""
    prefix = str(root).rstrip("/") + "/" if root else ""  # string slicing: 10x Path.relative_to
    frame = _typed(pd.DataFrame([_row(item, prefix) for item in loaded] or [{}]).iloc[
        : len(loaded)])
    if manifest is None and root is not None:
        manifest = read_manifest(Path(root))
    notes = []
    if manifest is not None:
        inside = _in_manifest(frame["path"], manifest)
        other, frame = frame[~inside], frame[inside]
        if len(other):
            notes.append(f"{len(other)} records below the sweep folder are not in its "
                         f"manifest ({manifest.sweep_name or MANIFEST_NAME}); they are listed "
                         f"as other runs and left out of the statistics")
    else:
        other = frame.iloc[:0]
    runs, superseded = _current(frame, manifest)
    if len(superseded):
        notes.append(f"{len(superseded)} older records of a (cell, seed) that has a newer "
                     f"or completed one are superseded and left out of the statistics")
    runs.attrs["notes"] = list(notes)
    return RecordFrames(runs, superseded, other, manifest, notes)


def runs_frame(loaded: list[LoadedRecord], *, root: Any = None,
               manifest: Manifest | None = None) -> pd.DataFrame:
    """One row per current record (index = position in `loaded`), corrupt ones included
    with status CORRUPT; superseded records and records outside the manifest are left
    out and counted in `frame.attrs["notes"]` (record_frames returns them)."""
    return record_frames(loaded, root=root, manifest=manifest).runs
