"""Run identity, in one place: which config keys label a cell, which only change how a run
is observed, and which make a variant. The config hash, the run folder's name, the skip
check, a sweep's manifest and the report's cells all derive from these rules.

- Label keys say what a cell is (model, task, target set, layers, budget, scale, seed).
- Observing keys change how a run is watched or where it runs, not what it computes
  (logger, device, threads, evaluation batch size, dry run, adapter saving, the report's and
  analysis settings): they are left out of the hash and the folder name, so rerunning a
  finished sweep with `logger=wandb` or `train.threads=1` skips every completed cell.
- Every other overridden key (e.g. `train.lr=0.001`) is a variant: a cell of its own.
"""

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from lora_ablate.records import Labels, layers_label

# Override keys (command line or sweep params) that the labels already hold.
LABEL_KEYS = frozenset({
    "model", "model.name", "task", "task.name", "targets", "targets.matrices", "targets.layers",
    "budget", "budget.kind", "budget.scale", "seed", "sweep",
})
# Config keys (dotted prefixes) that change how a run is observed, not what it computes.
OBSERVING_KEYS = frozenset({
    "logger", "dry_run", "save_adapter", "sweep_name", "sweep_reuse", "report", "analysis",
    "train.device", "train.threads", "train.eval_batch_size",
})
_UNSAFE = re.compile(r"[^A-Za-z0-9._,=+\-\[\]]")
MAX_VALUE = 40  # longer override values are shortened with a hash in folder names
MAX_NAME = 180


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def is_observing(key: str) -> bool:
    return any(key == k or key.startswith(k + ".") or key.startswith(k + "/") for k in OBSERVING_KEYS)


def is_hydra(key: str) -> bool:
    return key == "hydra" or key.startswith(("hydra.", "hydra/"))


def variant(overrides: list[str]) -> str:
    """The overrides that set a run apart beyond its labels, e.g. 'train.lr=0.001'."""
    kept = [o.lstrip("+") for o in overrides
            if not (is_hydra(k := _key(o)) or k in LABEL_KEYS or is_observing(k))]
    return ",".join(sorted(kept))


def config_hash(config: dict[str, Any]) -> str:
    """Hash of the resolved config without the observing keys."""
    relevant = _without(config, OBSERVING_KEYS)
    return hashlib.sha256(json.dumps(relevant, sort_keys=True, default=str).encode()).hexdigest()[:16]


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
    parts = sorted(safe_part(o.lstrip("+")) for o in overrides
                   if not (is_hydra(k := _key(o)) or k == "sweep" or is_observing(k)))
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
    budget = config["budget"]
    labels = Labels(
        model=config["model"]["name"], task=config["task"]["name"], target_set=target_set,
        budget=budget["kind"], budget_scale=float(budget.get("scale", 1.0)),
        layers=layers_label(config["targets"].get("layers")), variant=variant(overrides),
        seed=config.get("seed"),
    )
    scale = f"x{labels.budget_scale:g}" if labels.budget_scale != 1 else ""
    layers = f"@{labels.layers}" if labels.layers != "all" else ""
    run_id = (f"model={labels.model},task={labels.task},targets={target_set}{layers},"
              f"budget={labels.budget}{scale},seed={labels.seed}"
              + (f",{labels.variant}" if labels.variant else ""))
    return RunKey(labels, run_id, config_hash(config))
