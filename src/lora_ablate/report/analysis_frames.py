"""Tables behind the "why a target set wins" figures, from run records' `analysis`
sections and the singular vectors beside them (analysis.safetensors, read through
numpy). No torch here.

Every aggregated frame has n (runs or pairs) and a Student-t interval over seeds
(`ci_low`, `ci_high`) at `confidence`; intervals cover seed-to-seed variation only
(the merge curve and patching numbers are themselves measured on bounded test subsets).
"""

import math
from collections.abc import Sequence
from itertools import combinations
from pathlib import Path
import numpy as np
import pandas as pd

from lora_ablate.labels import CELL, GROUP, REPLICATE
from lora_ablate.records import VECTORS_NAME, Analysis, LoadedRecord, RunRecord, Status
from lora_ablate.report.metrics import is_higher_better
from lora_ablate.report.ordering import target_order
from lora_ablate.report.stats import t_half_width

KEYS = GROUP  # what sets cells apart besides the target set
Run = tuple[RunRecord, Path | None]  # a record and its run folder (for the vectors)
NO_ANALYSIS = Analysis()


def analysed_runs(loaded: Sequence[LoadedRecord]) -> list[Run]:
    """Completed records that carry an analysis, with their run folders."""
    return [(item.record, item.path.parent) for item in loaded
            if item.record is not None and item.record.status == Status.completed and item.record.analysis]


def _labels(record: RunRecord) -> dict[str, object]:
    row = record.labels.row()
    return {name: row[name] for name in (*CELL, REPLICATE)}


def _runs(runs: Sequence[Run | RunRecord]) -> list[Run]:
    return [r if isinstance(r, tuple) else (r, None) for r in runs]


def _interval(frame: pd.DataFrame, by: list[str], value: str, confidence: float) -> pd.DataFrame:
    """mean, std, n and t-interval of `value` per group (NaN values left out)."""
    clean = frame.dropna(subset=[value])
    if clean.empty:
        return pd.DataFrame(columns=[*by, "mean", "std", "n", "ci_low", "ci_high"])
    out = clean.groupby(by, dropna=False)[value].agg(["mean", "std", "count"]).reset_index()
    out = out.rename(columns={"count": "n"})
    half = t_half_width(out["std"], out["n"], confidence)
    out["ci_low"], out["ci_high"] = out["mean"] - half, out["mean"] + half
    if "target_set" in out:
        out = out.sort_values([c for c in by if c != "target_set"] + ["target_set"],
                              key=lambda s: target_order(s) if s.name == "target_set" else s, kind="stable")
    return out.reset_index(drop=True)


# ------------------------------------------------------------------ the updates (§7)


def modules_frame(runs: Sequence[Run | RunRecord]) -> pd.DataFrame:
    """One row per run and adapted module: rank, relative norm, amplification, effective
    rank, top singular value, content shift."""
    rows = []
    for record, _ in _runs(runs):
        for module in (record.analysis or NO_ANALYSIS).modules:
            values = module.singular_values
            rows.append(_labels(record) | {
                "module": module.name, "matrix": module.matrix, "layer": module.layer, "rank": module.rank,
                "relative_norm": module.relative_norm, "amplification": module.amplification,
                "effective_rank": module.effective_rank,
                "top_singular_value": _number(values[0]) if values else math.nan,
                "content_shift": module.content_shift})
    return pd.DataFrame(rows)


def relative_norm_frame(runs: Sequence[Run | RunRecord], confidence: float = 0.95) -> pd.DataFrame:
    """‖ΔW‖_F / ‖W‖_F per target set, matrix kind and layer, over seeds."""
    frame = modules_frame(runs)
    if frame.empty:
        return frame
    return _interval(frame, [*KEYS, "target_set", "matrix", "layer"], "relative_norm", confidence)


def amplification_frame(runs: Sequence[Run | RunRecord], confidence: float = 0.95) -> pd.DataFrame:
    """The amplification factor per target set and matrix kind: the mean over layers of a
    run, then over seeds."""
    frame = modules_frame(runs)
    if frame.empty:
        return frame
    per_run = frame.groupby([*KEYS, "target_set", "seed", "matrix"], dropna=False)["amplification"].mean().reset_index()
    return _interval(per_run, [*KEYS, "target_set", "matrix"], "amplification", confidence)


def load_vectors(run_dir: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return {k: v.astype(np.float64) for k, v in load_file(str(Path(run_dir) / VECTORS_NAME)).items()}


def subspace_similarity(u_i: np.ndarray, u_j: np.ndarray) -> np.ndarray:
    """φ(i, j) = ‖U_iᵀ U_j‖_F² / min(i, j) for the first i columns of u_i and the first j
    of u_j (LoRA paper §7.2, eq. 4), as a (k_i, k_j) array indexed from i, j = 1."""
    products = (u_i.T @ u_j) ** 2
    cumulative = products.cumsum(0).cumsum(1)  # [i-1, j-1] = Σ over the first i and j columns
    ki, kj = products.shape
    minimum = np.minimum.outer(np.arange(1, ki + 1), np.arange(1, kj + 1))
    return cumulative / minimum


def seed_similarity_frame(runs: Sequence[Run], target_set: str, *, side: str = "right") -> pd.DataFrame:
    """φ(i, j) between the ΔW subspaces of two seeds of `target_set`, per matrix kind:
    mean over every pair of seeds and every layer. `side`: right (input directions, the
    paper's choice for A) or left (output directions). Rows: matrix, i, j, phi, pairs."""
    chosen = [(r, d) for r, d in runs if r.labels.target_set == target_set and d is not None
              and (d / VECTORS_NAME).is_file()]
    rows = []
    groups: dict[tuple, list[tuple[RunRecord, Path]]] = {}
    for record, folder in chosen:
        key = tuple(_labels(record)[k] for k in KEYS)
        groups.setdefault(key, []).append((record, folder))
    for key, members in groups.items():
        vectors = [(record, load_vectors(folder)) for record, folder in members]
        sums: dict[str, tuple[np.ndarray, int]] = {}
        for (rec_a, vec_a), (rec_b, vec_b) in combinations(vectors, 2):
            for module in rec_a.analysis.modules:
                name = f"{module.name}.{side}"
                if name not in vec_a or name not in vec_b:
                    continue
                phi = subspace_similarity(vec_a[name], vec_b[name])
                total, count = sums.get(module.matrix, (0, 0))
                if count and np.shape(total) != phi.shape:
                    continue  # differing ranks: only like shapes are averaged
                sums[module.matrix] = (total + phi, count + 1)
        for matrix, (total, count) in sums.items():
            mean = total / count
            for (i, j), value in np.ndenumerate(mean):
                rows.append(dict(zip(KEYS, key)) | {"target_set": target_set, "matrix": matrix,
                                                     "i": i + 1, "j": j + 1, "phi": float(value), "pairs": count})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------ the probes


def shifts_frame(runs: Sequence[Run | RunRecord]) -> pd.DataFrame:
    """Per run: attention shift (mean over layers of KL(adapted ‖ base)), content shift
    (mean over adapted modules), and the patching numbers."""
    rows = []
    for record, _ in _runs(runs):
        analysis = record.analysis or NO_ANALYSIS
        attention = analysis.attention_shift
        content = [m.content_shift for m in analysis.modules if m.content_shift is not None]
        patching = analysis.patching
        rows.append(_labels(record) | {
            "attention_shift": float(np.mean(attention)) if attention else math.nan,
            "content_shift": float(np.mean(content)) if content else math.nan,
            "attention_share": _number(patching and patching.attention_share),
            "surviving_share": _number(patching and patching.surviving_share),
            "gain": _number(patching and patching.gain)})
    return pd.DataFrame(rows)


def _number(value: float | None) -> float:
    return math.nan if value is None else float(value)


def shift_summary_frame(runs: Sequence[Run | RunRecord], confidence: float = 0.95) -> pd.DataFrame:
    """Attention and content shift per target set: mean and interval over seeds, side by side."""
    frame = shifts_frame(runs)
    if frame.empty:
        return frame
    by = [*KEYS, "target_set"]
    attention = _interval(frame, by, "attention_shift", confidence)
    content = _interval(frame, by, "content_shift", confidence)
    return attention.merge(content, on=by, suffixes=("_attention", "_content"), how="outer")


def attention_share_frame(runs: Sequence[Run | RunRecord], confidence: float = 0.95) -> pd.DataFrame:
    """Share of the gain over the base model (with the trained head) carried by attention,
    per target set; runs whose gain is too small for a share are counted in n_undefined."""
    frame = shifts_frame(runs)
    if frame.empty:
        return frame
    by = [*KEYS, "target_set"]
    out = _interval(frame, by, "attention_share", confidence)
    undefined = frame[frame["attention_share"].isna()].groupby(by, dropna=False).size().rename("n_undefined").reset_index()
    out = out.merge(undefined, on=by, how="left") if not undefined.empty else out.assign(n_undefined=0)
    out["n_undefined"] = out["n_undefined"].fillna(0).astype(int)
    return out


# ------------------------------------------------------------------ merges and diagnostics


def merge_curve_frame(runs: Sequence[Run | RunRecord], confidence: float = 0.95) -> pd.DataFrame:
    """The metric at each merge weight per target set, mean and interval over seeds, with
    the metric's direction (`higher_is_better`: the record's, else from its name)."""
    rows = []
    for record, _ in _runs(runs):
        curve = (record.analysis or NO_ANALYSIS).merge_curve
        for weight, value in zip(curve.weights, curve.values) if curve else ():
            better = is_higher_better(str(curve.metric)) if curve.higher_is_better is None else curve.higher_is_better
            rows.append(_labels(record) | {"metric": curve.metric, "higher_is_better": better,
                                           "weight": float(weight), "value": _number(value)})
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    return _interval(frame, [*KEYS, "metric", "higher_is_better", "target_set", "weight"], "value", confidence)


def routing_gap_frame(records: Sequence[RunRecord], *, metric: str = "test/accuracy",
                      routing: str = "diag_routing", control: str = "diag_control",
                      confidence: float = 0.95) -> pd.DataFrame:
    """Routing-minus-control difference of `metric` per target set, paired by seed (and
    every other label), with its t-interval over pairs; beside it the routing and control
    means over the same pairs and the routing metric's own t-interval (is it learned?)."""
    rows = [_labels(r) | {"value": r.metrics.get(metric)} for r in records
            if r.status == Status.completed and r.labels.task in (routing, control)]
    frame = pd.DataFrame(rows)
    pair = [*(k for k in GROUP if k != "task"), "target_set", "seed"]  # a routing run and its control
    columns = [*pair[:-1], "mean", "std", "n", "ci_low", "ci_high", "routing", "control", "routing_ci_low",
               "routing_ci_high"]
    if frame.empty:
        return pd.DataFrame(columns=columns)
    wide = frame.pivot_table(index=pair, columns="task", values="value", aggfunc="last", dropna=False).reset_index()
    if routing not in wide or control not in wide:
        return pd.DataFrame(columns=columns)
    wide = wide.dropna(subset=[routing, control])
    wide["gap"] = wide[routing] - wide[control]
    out = _interval(wide, pair[:-1], "gap", confidence)
    learned = _interval(wide, pair[:-1], routing, confidence)[[*pair[:-1], "mean", "ci_low", "ci_high"]]
    learned = learned.rename(columns={"mean": "routing", "ci_low": "routing_ci_low", "ci_high": "routing_ci_high"})
    control_means = wide.groupby(pair[:-1], dropna=False)[control].mean().rename("control").reset_index()
    return out.merge(learned, on=pair[:-1], how="left").merge(control_means, on=pair[:-1], how="left")
