"""The shape of a sweep: the cells of its grid that have no record, and its config split
into what every run shares and what varies between runs."""

import json
from collections.abc import Iterable, Sequence
from typing import Any

import pandas as pd

from lora_ablate.labels import LABELS
from lora_ablate.records import CORRUPT
from lora_ablate.report.ordering import target_order


def missing_cells(runs: pd.DataFrame) -> pd.DataFrame:
    """Cells of the expected grid that have no record (of any status): within each
    (model, budget), the full product of the observed tasks, target sets, budget scales,
    layers, variants and seeds. Corrupt records carry no labels, so they fill no cell."""
    dims = [name for name in LABELS if name not in ("model", "budget")]
    seen = runs[runs["status"].ne(CORRUPT)]
    parts = []
    for (model, budget), rows in seen.groupby(["model", "budget"], dropna=False, sort=True):
        grid = pd.MultiIndex.from_product(
            [sorted(rows[d].dropna().unique()) for d in dims], names=dims)
        absent = grid.difference(pd.MultiIndex.from_frame(rows[dims])).to_frame(index=False)
        parts.append(absent.assign(model=model, budget=budget))
    columns = ["model", "budget", *dims]
    if not any(len(p) for p in parts):
        return pd.DataFrame(columns=columns)
    out = pd.concat([p for p in parts if len(p)], ignore_index=True)[columns]
    out["seed"] = out["seed"].astype("Int64")
    out = out.assign(_order=target_order(out["target_set"])).sort_values(
        ["model", "budget", *(d for d in dims if d not in ("target_set", "seed")), "_order", "seed"],
        kind="stable")
    return out.drop(columns="_order").reset_index(drop=True)


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = json.dumps(value, sort_keys=True)
    return flat


def distinct(values: Iterable[Any]) -> list[Any]:
    """Distinct values in first-seen order; nested ones are keyed by repr (records are
    written with sorted keys), which is much faster than json.dumps on 10,000 records."""
    seen: dict[Any, Any] = {}
    for value in values:
        key = repr(value) if isinstance(value, (dict, list)) else value
        seen.setdefault(key, value)
    return list(seen.values())


def _numbers_first(text: str) -> tuple[int, float, str]:
    """Sort key for JSON values: numbers by value (seed 2 before 10), then the rest."""
    try:
        return (0, float(text), "")
    except ValueError:
        return (1, 0.0, text)


def sweep_config(records: Sequence[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """The shared config of the sweep (first record's, without what varies between runs)
    and, for each varying key, its distinct values."""
    configs = [c for r in records if isinstance(c := r.get("config"), dict)]
    first = configs[0] if configs else {}
    # Compare whole sections first (cheap dict equality); flatten only distinct variants.
    sections = {k for cfg in configs for k in cfg if cfg.get(k) != first.get(k)}
    variants: dict[str, set[str]] = {}
    for section in sections | ({"seed"} & first.keys()):
        for value in distinct(cfg.get(section) for cfg in configs):
            for key, text in _flatten({section: value}).items():
                variants.setdefault(key, set()).add(text)
    varying = {k: sorted(v, key=_numbers_first) for k, v in sorted(variants.items())
               if len(v) > 1 or k == "seed"}
    shared = {k: v for k, v in _flatten(first).items() if k not in varying}
    return shared, varying
