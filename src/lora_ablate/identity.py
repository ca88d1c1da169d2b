"""Run identity, in one place: which config keys label a cell, which only change how a run
is observed, and which make a variant. The config hash, the run folder's name, the skip
check, a sweep's manifest and the report's cells all derive from these rules.

- Label keys say what a cell is: the fields of `labels.Labels` name the override keys they
  hold (model, task, target set, layers, budget, scale, seed).
- Observing keys change how a run is watched or where it runs, not what it computes
  (logger, device, threads, evaluation batch size, dry run, adapter saving, the report's and
  analysis settings): the schema marks them (`observing` in a field's metadata, see
  config/schema.py); they are left out of the hash and the folder name, so rerunning a
  finished sweep with `logger=wandb` or `train.threads=1` skips every completed cell.
- Every other overridden key (e.g. `train.lr=0.001`) is a variant: a cell of its own.
"""

import dataclasses
import hashlib
import json
import re
import typing
from dataclasses import dataclass
from typing import Any

from lora_ablate.config.schema import RunConfig
from lora_ablate.labels import Labels, label_overrides

SWEEP_GROUP = "sweep"  # `sweep=NAME` picks a sweep file: the cells it makes carry their own overrides
_UNSAFE = re.compile(r"[^A-Za-z0-9._,=+\-\[\]]")
MAX_VALUE = 40  # longer override values are shortened with a hash in folder names
MAX_NAME = 180


def observing_keys(schema: type = RunConfig, prefix: str = "") -> frozenset[str]:
    """Dotted config keys whose schema field is marked `observing`."""
    found: set[str] = set()
    hints = typing.get_type_hints(schema)
    for f in dataclasses.fields(schema):
        if f.metadata.get("observing"):
            found.add(prefix + f.name)
        elif dataclasses.is_dataclass(hints[f.name]):
            found |= observing_keys(hints[f.name], f"{prefix}{f.name}.")
    return frozenset(found)


def added_defaults(schema: type = RunConfig, prefix: str = "") -> dict[str, Any]:
    """Dotted config keys whose schema field is marked `hashed_when_set`, with their defaults."""
    found: dict[str, Any] = {}
    hints = typing.get_type_hints(schema)
    for f in dataclasses.fields(schema):
        if f.metadata.get("hashed_when_set"):  # a list's default comes from its factory
            found[prefix + f.name] = f.default_factory() if f.default is dataclasses.MISSING else f.default
        elif dataclasses.is_dataclass(hints[f.name]):
            found |= added_defaults(hints[f.name], f"{prefix}{f.name}.")
    return found


# Override keys (command line or sweep params) that the labels already hold.
LABEL_KEYS = label_overrides() | {SWEEP_GROUP}
# Config keys (dotted prefixes) that change how a run is observed, not what it computes.
OBSERVING_KEYS = observing_keys()
# Keys added after records exist, hashed only when they differ from these defaults.
ADDED_DEFAULTS = added_defaults()


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def is_observing(key: str) -> bool:
    return any(key == k or key.startswith(k + ".") or key.startswith(k + "/") for k in OBSERVING_KEYS)


def is_hydra(key: str) -> bool:
    return key == "hydra" or key.startswith(("hydra.", "hydra/"))


def identifying(overrides: list[str]) -> list[str]:
    """The overrides that say which cell a run is (labels and variant), without '+'
    prefixes: not Hydra's own, not the sweep file's name, not observing ones."""
    return [o.lstrip("+") for o in overrides
            if not (is_hydra(k := _key(o)) or k == SWEEP_GROUP or is_observing(k))]


def variant(overrides: list[str]) -> dict[str, str | None]:
    """The identifying overrides beyond the labels, e.g. {'train.lr': '0.001'}; a `~key`
    deletion maps to None."""
    out: dict[str, str | None] = {}
    for override in identifying(overrides):
        key, eq, value = override.partition("=")
        if _key(key) not in LABEL_KEYS:
            out[key] = value if eq else None
    return out


def config_hash(config: dict[str, Any]) -> str:
    """Hash of the resolved config without the observing keys, and without the keys added
    since records were first written while they hold their defaults."""
    at_default = frozenset(k for k, default in ADDED_DEFAULTS.items() if _get(config, k, default) == default)
    relevant = _without(config, OBSERVING_KEYS | at_default)
    return hashlib.sha256(json.dumps(relevant, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _get(config: dict[str, Any], dotted: str, missing: Any) -> Any:
    for part in dotted.split("."):
        if not isinstance(config, dict) or part not in config:
            return missing
        config = config[part]
    return config


def _without(config: dict[str, Any], keys: frozenset[str]) -> dict[str, Any]:
    out = {}
    for name, value in config.items():
        if name in keys:
            continue
        nested = frozenset(k.split(".", 1)[1] for k in keys if k.startswith(name + "."))
        out[name] = _without(value, nested) if nested and isinstance(value, dict) else value
    return out


def safe_part(text: str) -> str:
    """One override as a folder-name part: no path separators or odd characters; an unsafe
    or long value shortened and made unique with a hash of the original."""
    key, _, value = text.partition("=")
    clean = _UNSAFE.sub("_", value)
    if clean != value or len(value) > MAX_VALUE:
        digest = hashlib.sha256(value.encode()).hexdigest()[:8]
        clean = f"{clean[:MAX_VALUE - 9].strip('_.')}~{digest}"
    key = _UNSAFE.sub("_", key)
    return f"{key}={clean}" if _ else key


def run_dirname(overrides: list[str]) -> str:
    """The folder of a sweep cell: its identifying overrides (labels and variant), sorted,
    made safe; observing and Hydra overrides do not change it."""
    parts = sorted(safe_part(o) for o in identifying(overrides))
    name = ",".join(parts) or "default"
    if len(name) > MAX_NAME:
        name = f"{name[:MAX_NAME - 9]}~{hashlib.sha256(name.encode()).hexdigest()[:8]}"
    return name.lstrip(".") or "default"


@dataclass(frozen=True)
class RunKey:
    """Who a run is: its labels, its id (labels + variant as text) and its config hash."""

    labels: Labels
    run_id: str
    config_hash: str


def run_key(config: dict[str, Any], target_set: str, overrides: list[str]) -> RunKey:
    """The identity of a run from its resolved config (a plain dict), the plan's target-set
    label and the overrides that made it."""
    labels = Labels.from_config(config, target_set=target_set, variant=variant(overrides))
    scale = f"x{labels.budget_scale:g}" if labels.budget_scale != 1 else ""
    layers = f"@{labels.layers}" if labels.layers != "all" else ""
    run_id = (f"model={labels.model},task={labels.task},targets={target_set}{layers},"
              f"budget={labels.budget}{scale},seed={labels.seed}"
              + (f",{labels.variant_text}" if labels.variant else ""))
    return RunKey(labels, run_id, config_hash(config))
