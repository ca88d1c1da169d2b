"""The run record (`result.json`): one typed schema, written by the runner, read by the
report, made by the test fixtures, all through `RunRecord`.

Version 2 adds `schema_version`, the labels as a type, per-example predictions, the
`collapsed` flag, model and data identity, analysis, and `interrupted` status; records of
version 1 (no `schema_version`) keep loading. A completed record is never overwritten:
`write_record` moves it aside as `result.<config hash>.json` first.
"""

import dataclasses
import json
import math
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lora_ablate.files import write_atomic

SCHEMA_VERSION = 2
RECORD_NAME = "result.json"
RECORD_GLOB = "result*.json"  # result.json and completed records moved aside
MAX_RECORD_BYTES = 64 * 2**20  # a real record is a few MB at most (predictions of 100k examples)
STATUSES = ("completed", "failed", "diverged", "interrupted")
_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"
_DECODE = bytes(_DIGITS.index(chr(b)) if chr(b) in _DIGITS else 255 for b in range(256))


class RecordError(ValueError):
    """A file that is not a readable run record; the message says why."""


@dataclass(frozen=True)
class Labels:
    """What a cell of a report is: runs that share every label but the seed are one cell."""

    model: str
    task: str
    target_set: str
    budget: str
    budget_scale: float = 1.0
    layers: str = "all"  # targets.layers: all, bottom, middle, top, or a list
    variant: str = ""  # other overrides that set the run apart, e.g. "train.lr=0.001"
    seed: int | None = None


@dataclass(frozen=True)
class SplitPredictions:
    """Predicted and true class ids of a split's examples, in the split's fixed order
    (the same for every run of a task), so runs can be paired example by example."""

    predicted: list[int]
    labels: list[int]

    def __post_init__(self) -> None:
        if len(self.predicted) != len(self.labels):
            raise RecordError(f"{len(self.predicted)} predictions for {len(self.labels)} labels")

    @property
    def correct(self) -> list[bool]:
        return [p == y for p, y in zip(self.predicted, self.labels)]

    def to_dict(self) -> dict[str, Any]:
        return {"predicted": _pack(self.predicted), "labels": _pack(self.labels)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SplitPredictions":
        return cls(_unpack(data["predicted"]), _unpack(data["labels"]))


def _pack(ids: list[int]) -> str | list[int]:
    """Class ids below 36 as one base-36 character each: 2,000 test ids in 2 kB of JSON."""
    if all(0 <= i < len(_DIGITS) for i in ids):
        return "".join(_DIGITS[i] for i in ids)
    return list(ids)


def _unpack(packed: str | list[int]) -> list[int]:
    if isinstance(packed, str):
        ids = packed.encode("ascii", "replace").translate(_DECODE)  # one C call, not a loop
        if ids and max(ids) >= len(_DIGITS):
            raise RecordError("predictions hold a character that is not a base-36 digit")
        return list(ids)
    if isinstance(packed, list) and all(isinstance(i, int) for i in packed):
        return packed
    raise RecordError("predictions are neither a base-36 string nor a list of ints")


@dataclass(frozen=True)
class RunError:
    type: str
    message: str


@dataclass(frozen=True)
class Cost:
    train_seconds: float = 0.0
    steps: int = 0
    train_tokens: int = 0
    tokens_per_second: float | None = None
    eval_seconds: float | None = None
    analysis_seconds: float | None = None
    peak_memory_bytes: int | None = None
    device: str | None = None
    precision: str | None = None  # fp32 | bf16: what actually ran


@dataclass(frozen=True)
class RunRecord:
    status: str
    run_id: str
    labels: Labels
    config: dict[str, Any]  # resolved
    config_hash: str
    plan: dict[str, Any]
    metrics: dict[str, float] = field(default_factory=dict)  # final test/<name>, val/<name>
    history: list[dict[str, float]] = field(default_factory=list)  # validation curve
    best: dict[str, float] | None = None  # best validation point
    predictions: dict[str, SplitPredictions] = field(default_factory=dict)  # "val", "test"
    collapsed: bool = False  # completed, but the validation metric is at chance
    analysis: dict[str, Any] | None = None
    cost: Cost = field(default_factory=Cost)
    provenance: dict[str, Any] = field(default_factory=dict)
    identity: dict[str, Any] = field(default_factory=dict)  # {"model": ..., "data": ...}
    error: RunError | None = None
    nonfinite: list[str] = field(default_factory=list)  # fields whose NaN/inf became null
    merge_max_abs_diff: float | None = None
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise RecordError(f"status must be one of {', '.join(STATUSES)}, got {self.status!r}")

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["predictions"] = {split: p.to_dict() for split, p in self.predictions.items()}
        cleaned, nonfinite = _finite(data)
        cleaned["nonfinite"] = sorted(set(self.nonfinite) | set(nonfinite))
        return cleaned

    @classmethod
    def from_dict(cls, data: Any) -> "RunRecord":
        """A record from parsed JSON, of this version or an older one; RecordError
        naming the problem when the shape is wrong."""
        if not isinstance(data, dict):
            raise RecordError("not a JSON object")
        if data.get("status") not in STATUSES:
            raise RecordError(f"not a run record (status {data.get('status')!r})")
        try:
            config = _mapping(data.get("config"), "config")
            return cls(
                status=data["status"],
                run_id=str(data.get("run_id") or ""),
                labels=_labels(data.get("labels"), config),
                config=config,
                config_hash=str(data.get("config_hash") or ""),
                plan=_mapping(data.get("plan"), "plan"),
                metrics=_metrics(data.get("metrics")),
                history=_history(data.get("history")),
                best=_mapping(data.get("best"), "best") or None,
                predictions={k: SplitPredictions.from_dict(v)
                             for k, v in _mapping(data.get("predictions"), "predictions").items()},
                collapsed=bool(data.get("collapsed", False)),
                analysis=data.get("analysis"),
                cost=_dataclass(Cost, data.get("cost"), "cost"),
                provenance=_mapping(data.get("provenance"), "provenance"),
                identity=_mapping(data.get("identity"), "identity"),
                error=_error(data.get("error")),
                nonfinite=list(data.get("nonfinite") or []),
                merge_max_abs_diff=data.get("merge_max_abs_diff"),
                schema_version=int(data.get("schema_version", 1)),
            )
        except RecordError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise RecordError(f"malformed record ({type(err).__name__}: {err})") from None

    @property
    def ended_at(self) -> str:
        return str(self.provenance.get("ended_at") or "")


def _mapping(value: Any, name: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise RecordError(f"malformed record: '{name}' is a {type(value).__name__}, not an object")
    return value


def _metrics(value: Any) -> dict[str, float]:
    metrics = _mapping(value, "metrics")
    return {k: float(v) for k, v in metrics.items() if v is not None}


def _history(value: Any) -> list[dict[str, float]]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(p, dict) for p in value):
        raise RecordError("malformed record: 'history' is not a list of objects")
    return value


def _dataclass(kind: type, value: Any, name: str) -> Any:
    known = {f.name for f in dataclasses.fields(kind)}
    return kind(**{k: v for k, v in _mapping(value, name).items() if k in known})


def _error(value: Any) -> RunError | None:
    if not value:
        return None
    if isinstance(value, dict):
        return RunError(str(value.get("type", "Error")), str(value.get("message", "")))
    return RunError("Error", str(value))


def _labels(value: Any, config: dict[str, Any]) -> Labels:
    """The record's labels; a version-1 record without some falls back to its config."""
    labels = _mapping(value, "labels")
    section = lambda name: config.get(name) if isinstance(config.get(name), dict) else {}  # noqa: E731
    targets = section("targets")
    fallback = {
        "model": section("model").get("name"),
        "task": section("task").get("name"),
        "target_set": "".join(targets.get("matrices") or []) or None,
        "budget": section("budget").get("kind"),
        "budget_scale": section("budget").get("scale", 1.0),
        "layers": layers_label(targets.get("layers")),
        "variant": "",
        "seed": config.get("seed"),
    }
    merged = {k: labels.get(k, fallback[k]) for k in fallback}
    seed = merged["seed"]
    return Labels(
        model=str(merged["model"]), task=str(merged["task"]), target_set=str(merged["target_set"]),
        budget=str(merged["budget"]), budget_scale=float(merged["budget_scale"] or 1.0),
        layers=str(merged["layers"] or "all"), variant=str(merged["variant"] or ""),
        seed=None if seed is None else int(seed),
    )


def layers_label(layers: Any) -> str:
    """targets.layers as a label: all, a band name, or indices joined by '-'."""
    if layers in (None, "all"):
        return "all"
    if isinstance(layers, (list, tuple)):
        return "[" + ",".join(str(x) for x in layers) + "]"
    return str(layers)


def _finite(value: Any, path: str = "") -> tuple[Any, list[str]]:
    """The value with every NaN/inf float replaced by None, and where they were."""
    if isinstance(value, float) and not math.isfinite(value):
        return None, [path or "."]
    if isinstance(value, dict):
        out, bad = {}, []
        for k, v in value.items():
            out[k], where = _finite(v, f"{path}.{k}" if path else str(k))
            bad += where
        return out, bad
    if isinstance(value, (list, tuple)):
        items = [_finite(v, f"{path}[{i}]") for i, v in enumerate(value)]
        return [v for v, _ in items], [w for _, where in items for w in where]
    return value, []


# ---------------------------------------------------------------- on disk


@dataclass(frozen=True)
class LoadedRecord:
    path: Path
    record: RunRecord | None  # None when the file could not be read as a record
    problem: str | None = None  # why it could not, e.g. "truncated JSON"


def read_record(path: Path) -> LoadedRecord:
    """The record in `path`; a file that is not a regular file (a FIFO would hang the
    read) or is over MAX_RECORD_BYTES is listed as unreadable without being read."""
    try:
        info = os.stat(path)
    except OSError as err:
        return LoadedRecord(Path(path), None, f"unreadable record ({type(err).__name__}: {err})")
    if not stat.S_ISREG(info.st_mode):
        return LoadedRecord(Path(path), None, "not a regular file (left unread)")
    if info.st_size > MAX_RECORD_BYTES:
        return LoadedRecord(Path(path), None, f"{info.st_size:,} bytes, over the {MAX_RECORD_BYTES:,}-byte "
                                              "limit for a record (left unread)")
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        return LoadedRecord(Path(path), None, f"unreadable record ({type(err).__name__}: {err})")
    try:
        return LoadedRecord(Path(path), RunRecord.from_dict(data))
    except RecordError as err:
        return LoadedRecord(Path(path), None, str(err))


def find_records(sweep_dir: Path) -> list[LoadedRecord]:
    """Every record below sweep_dir (current and moved-aside ones), sorted by path."""
    return [read_record(p) for p in sorted(Path(sweep_dir).rglob(RECORD_GLOB))]


def write_record(run_dir: Path, record: RunRecord) -> Path:
    """Write `record` as run_dir/result.json atomically. A completed record already
    there is moved aside as result.<its config hash>[.N].json, never overwritten."""
    target = Path(run_dir) / RECORD_NAME
    previous = read_record(target) if target.exists() else None
    if previous and previous.record and previous.record.status == "completed":
        _move_aside(target, previous.record.config_hash or "unhashed")
    text = json.dumps(record.to_dict(), indent=1, sort_keys=True, allow_nan=False, default=str)
    return write_atomic(target, text)


def _move_aside(target: Path, config_hash: str) -> Path:
    for n in range(1000):
        aside = target.with_name(f"result.{config_hash}{'' if n == 0 else f'.{n}'}.json")
        if not aside.exists():
            target.rename(aside)
            return aside
    raise RuntimeError(f"cannot move {target} aside: too many earlier records")


def completed_record(run_dir: Path, config_hash: str) -> RunRecord | None:
    """A completed record of this exact config in run_dir (current or moved aside)."""
    for path in sorted(Path(run_dir).glob(RECORD_GLOB)):
        record = read_record(path).record
        if record and record.status == "completed" and record.config_hash == config_hash:
            return record
    return None
