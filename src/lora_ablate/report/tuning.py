"""The tuned comparison: each target set at its own best value of a swept key (e.g.
train.lr), chosen on the validation metric, then compared with the baseline's own tuned
result on the test metric, with the same statistics as the plain summary.

A tuned key lives in the record's config (train.lr) and in its variant ("train.lr=0.001");
the groups here ignore the tuned keys' part of the variant, so every value of the grid is
a candidate for the same target set.
"""

from collections.abc import Sequence
from typing import Any

import pandas as pd

from lora_ablate.errors import ConfigError
from lora_ablate.records import CORRUPT, LoadedRecord, Status
from lora_ablate.labels import CELL, GROUP
from lora_ablate.report.baselines import check_baseline
from lora_ablate.report.compare import COLUMNS as COMPARE_COLUMNS
from lora_ablate.report.compare import Settings
from lora_ablate.report.metrics import is_higher_better
from lora_ablate.report.runs import COST
from lora_ablate.report.seeds import outcome, usable_runs
from lora_ablate.report.summary import compare_frame, ordered_table


def tuned_columns(tune: Sequence[str]) -> tuple[str, ...]:
    return (*GROUP, "target_set", *tune, "grid", "edge_of_grid", "val_metric", "val_mean",
            "val_seeds", "n_lost", "tie_note", "metric", "n", "n_pairs",
            *[c for c in COMPARE_COLUMNS if c not in ("target_set", "n", "n_pairs")],
            "baseline_note", "lora_params")


def _lookup(config: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(config, dict) or part not in config:
            return None
        config = config[part]
    return config


def split_variant(variant: str, tune: Sequence[str]) -> tuple[str, dict[str, str]]:
    """("lora.dropout=0.1", {"train.lr": "0.001"}) from "lora.dropout=0.1,train.lr=0.001"."""
    kept, tuned = [], {}
    for part in filter(None, str(variant or "").split(",")):
        key, _, value = part.partition("=")
        if key in tune:
            tuned[key] = value
        else:
            kept.append(part)
    return ",".join(kept), tuned


def _number(value: Any) -> Any:
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


def _tuned_values(runs: pd.DataFrame, loaded: Sequence[LoadedRecord] | None,
                  tune: Sequence[str]) -> pd.DataFrame:
    """The tuned keys' values per run (from the config, else from the variant) and the
    variant without them."""
    rest, values = [], {key: [] for key in tune}
    for i, variant in zip(runs.index, runs["variant"]):
        kept, parsed = split_variant(variant, tune)
        rest.append(kept)
        config = loaded[i].record.config if loaded is not None and loaded[i].record else None
        for key in tune:
            value = _lookup(config, key) if config is not None else None
            values[key].append(_number(parsed.get(key) if value is None else value))
    return runs.assign(variant=rest, **values)


def _number_key(value: Any) -> tuple[int, float, str]:
    return (0, value, "") if isinstance(value, float) else (1, 0.0, str(value))


def _text(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _edge(chosen: Any, grid: list[Any]) -> bool:
    """Whether the chosen value is the smallest or largest of its grid (so the best value
    may lie outside it)."""
    ordered = sorted(grid, key=_number_key)
    return chosen in (ordered[0], ordered[-1])


LOST = (Status.failed, Status.diverged, Status.interrupted)  # no validation value: they count as the worst


def _scores(runs: pd.DataFrame, val: str, tune: Sequence[str], better_high: bool) -> pd.DataFrame:
    """Per (tuning group, target set, tuned values): the validation mean over every seed
    that ran, a lost seed (failed, diverged, interrupted, or no metric) counting as the
    worst validation value of its target set's grid, so a value cannot win on its
    survivors; collapsed runs count with the value they reached. Also the seeds and the
    seeds lost (collapsed included)."""
    keys = [*GROUP, "target_set"]
    values = runs[val].where(~runs["_outcome"].isin(LOST))
    worst = values.groupby([runs[k] for k in keys], dropna=False).transform(
        "min" if better_high else "max")
    scored = runs.assign(_score=values.fillna(worst),
                         _lost=runs["_outcome"].ne(Status.completed))
    return scored.groupby([*keys, *tune], dropna=False, sort=True).agg(
        val_mean=("_score", "mean"), val_seeds=("seed", "nunique"),
        n_lost=("_lost", "sum")).reset_index()


def _interior(options: pd.DataFrame, tune: Sequence[str], grids: dict[str, list[Any]]) -> int:
    """Index (into options) of the most interior of tied options: the smallest distance
    from the middle of each grid, then the first."""
    def distance(row: pd.Series) -> float:
        return sum(abs(grids[k].index(row[k]) - (len(grids[k]) - 1) / 2) for k in tune)
    return int(options.apply(distance, axis=1).idxmin())


def _choose(scores: pd.DataFrame, tune: Sequence[str], better_high: bool) -> pd.DataFrame:
    """Per (tuning group, target set): the tuned values with the best validation score
    among those that lost at most half their seeds; exact ties go to the interior of the
    grid and are said; the grid and whether the choice is at its edge."""
    keys = [*GROUP, "target_set"]
    rows = []
    for key, options in scores.groupby(keys, dropna=False, sort=False):
        grids = {k: sorted(options[k].drop_duplicates().tolist(), key=_number_key) for k in tune}
        eligible = options[options["n_lost"] * 2 <= options["val_seeds"]]
        note = ""
        if eligible.empty or eligible["val_mean"].isna().all():
            eligible, note = options, "every value lost most of its seeds"
        if eligible["val_mean"].isna().all():
            continue
        best_score = eligible["val_mean"].max() if better_high else eligible["val_mean"].min()
        tied = eligible[(eligible["val_mean"] - best_score).abs() <= 1e-12 * max(1.0, abs(best_score))]
        best = options.loc[_interior(tied, tune, grids)]
        if len(tied) > 1:
            values = "; ".join(", ".join(f"{k} {_text(r[k])}" for k in tune)
                               for _, r in tied.iterrows())
            chosen = ", ".join(f"{k} {_text(best[k])}" for k in tune)
            note = "; ".join(filter(None, [note, f"tied on validation ({best_score:.4g}) between "
                                                 f"{values}; chose {chosen}, the most interior"]))
        rows.append({**dict(zip(keys, key)), **{k: best[k] for k in tune},
                     "val_mean": best["val_mean"], "val_seeds": int(best["val_seeds"]),
                     "n_lost": int(best["n_lost"]), "tie_note": note,
                     "grid": "; ".join(f"{k}: {', '.join(map(_text, g))}"
                                       for k, g in grids.items()),
                     "edge_of_grid": any(_edge(best[k], grids[k]) for k in tune)})
    return pd.DataFrame(rows)


def tuned_frame(runs: pd.DataFrame, *, tune: Sequence[str] = ("train.lr",),
                metric: str = "test/accuracy", baseline: str = "qv",
                loaded: Sequence[LoadedRecord] | None = None, confidence: float = 0.95,
                alpha: float | None = None, higher_is_better: bool | None = None,
                effect: float = 0.01) -> pd.DataFrame:
    """tuned.csv: per (group without the tuned keys, target set), the value of the tuned
    keys with the best validation score (val/<name> of `metric`; _scores and _choose say
    how lost seeds and ties count), the seeds behind it and how many were lost, and the test
    metric of the target set at that value compared with the baseline's own tuned result
    by seed (the statistics of `summarize`). Columns: tuned_columns(tune)."""
    tune = list(tune)
    check_baseline(runs, baseline)
    val = "val/" + metric.split("/", 1)[-1]
    real = runs[runs["status"].ne(CORRUPT)]
    if val not in real:
        raise ConfigError(f"Tuning on {', '.join(tune)} picks values by the validation metric "
                          f"{val!r}, which no run recorded. Record it (task.metric) or tune on "
                          f"another metric.")
    better = is_higher_better(metric) if higher_is_better is None else higher_is_better
    # one level for the intervals, "resolved" and an adaptive design's stages
    family_alpha = 1 - confidence if alpha is None else alpha
    settings = Settings(confidence=confidence, alpha=family_alpha, higher_is_better=better,
                        effect=effect)
    done, notes = usable_runs(real, metric, outcome(real, metric))
    if done.empty:
        return ordered_table([], tuned_columns(tune), notes)
    done = _tuned_values(done, loaded, tune)
    ran = _tuned_values(real.assign(_outcome=outcome(real, metric)), loaded, tune)
    missing = [k for k in tune if done[k].isna().all()]
    if missing:
        raise ConfigError(f"The tuned key(s) {', '.join(missing)} appear neither in the runs' "
                          f"config nor in their variant. Tune on a key the sweep varies, "
                          f"e.g. train.lr.")
    unswept = {k: done[k].dropna().iloc[0] for k in tune if done[k].nunique(dropna=True) < 2}
    if unswept:
        raise ConfigError("Tuning needs a key the sweep varies, but " + ", ".join(
            f"{k} has one value ({v})" for k, v in unswept.items()) + " in its completed runs; "
            "drop it from report.tune / --tune, or sweep it (e.g. train.lr=1e-3,3e-3,1e-2).")
    chosen = _choose(_scores(ran[ran["seed"].notna()], val, tune, better), tune, better)
    # merge drops the index, which keys the runs' predictions: carry it through
    picked = done.rename_axis("_run").reset_index().merge(
        chosen, on=[*GROUP, "target_set", *tune], how="inner").set_index("_run")
    table, more = compare_frame(picked, metric, baseline, settings, loaded)
    info = picked.groupby(list(CELL), dropna=False)[["lora_params", *COST]].median()
    table = table.merge(chosen, on=[*GROUP, "target_set"], how="left").merge(
        info.reset_index(), on=list(CELL), how="left")
    table = table.assign(metric=metric, val_metric=val)
    return ordered_table([table], tuned_columns(tune), notes + more)
