"""Cell identity, as one dataclass: `Labels` says what a cell of a report is. The report's
label columns (LABELS), its groups (GROUP) and cells (CELL), the override keys the labels
hold, and the variant (every other identifying override) all derive from its fields, so
the hash, folder names, skip check, manifest and report cannot disagree about a cell.
No torch, no Hydra here (the report side imports it).
"""

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any


def _label(*overrides: str) -> dict[str, Any]:
    """Field metadata: the override keys (command line, sweep params) that set this label."""
    return {"overrides": overrides}


@dataclass(frozen=True)
class Labels:
    """What a cell of a report is: runs that share every label but the seed are one cell;
    cells that share every label but the target set are one group, compared together.
    Every cell identity in the code (the variant, the report's GROUP and CELL, the grid
    of missing cells) derives from these fields."""

    model: str = field(metadata=_label("model", "model.name"))
    task: str = field(metadata=_label("task", "task.name"))
    target_set: str = field(metadata=_label("targets", "targets.matrices"))
    budget: str = field(metadata=_label("budget", "budget.kind"))
    budget_scale: float = field(default=1.0, metadata=_label("budget.scale"))
    layers: str = field(default="all", metadata=_label("targets.layers"))  # all, bottom, middle, top, or a list
    # Every other identifying override (e.g. {"train.lr": "0.001"}); None: a `~key` deletion.
    variant: Mapping[str, str | None] = field(default_factory=dict, hash=False)
    seed: int | None = field(default=None, metadata=_label("seed"))

    @property
    def variant_text(self) -> str:
        """The variant as one string, e.g. "train.lr=0.001,train.warmup_ratio=0"."""
        return variant_text(self.variant)

    def row(self) -> dict[str, Any]:
        """The labels as a frame row: LABELS columns, the variant as text."""
        return {name: self.variant_text if name == "variant" else getattr(self, name) for name in LABELS}

    def to_dict(self) -> dict[str, Any]:
        return {name: dict(self.variant) if name == "variant" else getattr(self, name) for name in LABELS}

    @classmethod
    def from_config(cls, config: Mapping[str, Any], *, target_set: str,
                    variant: Mapping[str, str | None] | None = None) -> "Labels":
        """The labels of a run from its resolved config; `target_set` is the plan's name for
        its matrices (plan/layout names it), `variant` its other identifying overrides."""
        section = lambda name: config.get(name) if isinstance(config.get(name), Mapping) else {}  # noqa: E731
        seed = config.get("seed")
        return cls(
            model=str(section("model").get("name")), task=str(section("task").get("name")),
            target_set=target_set, budget=str(section("budget").get("kind")),
            budget_scale=float(section("budget").get("scale") or 1.0),
            layers=layers_label(section("targets").get("layers")), variant=dict(variant or {}),
            seed=None if seed is None else int(seed),
        )


LABELS = tuple(f.name for f in fields(Labels))  # the runs frame's label columns, in this order
COMPARED, REPLICATE = "target_set", "seed"  # what a group compares; what repeats a cell
GROUP = tuple(name for name in LABELS if name not in (COMPARED, REPLICATE))
CELL = (*GROUP, COMPARED)
_OVERRIDE = re.compile(r"^(~[\w.\-/@]+$|\+*[A-Za-z_][\w.\-/@]*=)")  # a part that starts an override


def label_overrides() -> frozenset[str]:
    """Override keys the labels hold (so they are no part of a variant)."""
    return frozenset(key for f in fields(Labels) for key in f.metadata.get("overrides", ()))


def variant_text(variant: Mapping[str, str | None]) -> str:
    """A variant as text: its overrides sorted and joined by ','."""
    return ",".join(sorted(key if value is None else f"{key}={value}" for key, value in variant.items()))


def parse_variant(text: str) -> dict[str, str | None]:
    """A variant from its text (as version 2 records hold it). Values may contain commas
    (lists, quoted strings): a part that does not start a new `key=` continues the value."""
    parts: list[str] = []
    for piece in filter(None, str(text or "").split(",")):
        if parts and not _OVERRIDE.match(piece):
            parts[-1] += "," + piece
        else:
            parts.append(piece)
    return {key: (value if eq else None) for key, eq, value in (p.partition("=") for p in parts)}


def layers_label(layers: Any) -> str:
    """targets.layers as a label: all, a band name, or a list of indices."""
    if layers in (None, "all"):
        return "all"
    if isinstance(layers, (list, tuple)):
        return "[" + ",".join(str(x) for x in layers) + "]"
    return str(layers)


# Labels that say nothing about a group at their default (every layer, no variant), as the
# runs frame holds them: a group's title leaves them out.
LABEL_DEFAULTS = {"layers": next(f.default for f in fields(Labels) if f.name == "layers"), "variant": variant_text({})}
