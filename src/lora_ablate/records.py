"""The run record (`result.json`): one typed schema, written by the runner, read by the
report, made by the test fixtures, all through `RunRecord`. Its sections are typed too
(`Plan`, `Analysis`, `Provenance`, `Identity`); only the resolved `config` stays a mapping.

SFT runs add `example_losses` and `dropped_completions` (absent in older records: empty).
Version 3 types every section and writes the variant as an object; version 2 added
`schema_version`, the labels, per-example predictions, the `collapsed` flag, identity,
analysis and `interrupted`. Records of versions 1 and 2 keep loading. A completed record is
never overwritten: `write_record` moves it aside as `result.<config hash>.json` first.
One module (~360 lines) on purpose: the record's reader and writer must change together.
"""

import json
import os
import stat
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from lora_ablate.convergence import Convergence
from lora_ablate.files import write_atomic
from lora_ablate.labels import CELL, GROUP, LABELS, Labels, layers_label, parse_variant  # noqa: F401
from lora_ablate.record_analysis import VECTORS_NAME, Analysis  # noqa: F401  (public re-exports)
from lora_ablate.record_fields import RecordError, finite, items, known, mapping
from lora_ablate.record_origin import Identity, ModelIdentity, Provenance  # noqa: F401
from lora_ablate.record_plan import Module, Plan  # noqa: F401
from lora_ablate.target_sets import as_written, target_set_name

SCHEMA_VERSION = 3
RECORD_NAME = "result.json"
RECORD_GLOB = "result*.json"  # result.json and completed records moved aside
CORRUPT = "corrupt"  # what the report lists a file under that is not a readable record
MAX_RECORD_BYTES = 64 * 2**20  # a real record is a few MB at most (predictions of 100k examples)
_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"
_DECODE = bytes(_DIGITS.index(chr(b)) if chr(b) in _DIGITS else 255 for b in range(256))


class Status(StrEnum):
    """How a run ended. Members equal their names, so frames and JSON hold plain strings."""

    completed = "completed"
    failed = "failed"
    diverged = "diverged"
    interrupted = "interrupted"


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
class ExampleLosses:
    """An SFT split's per-example completion NLL (nats, summed over the example's completion
    tokens, EOS included), completion token counts and argmax-correct tokens, in the split's
    fixed order (the same for every run of a task), so runs can be paired example by example;
    and, for a task with a checkable answer, each example's exact-match bit (1: the greedy
    generation's answer equals the gold one). No bits: the task makes no generation."""

    nll: list[float]
    tokens: list[int]
    correct: list[int]
    exact_match: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not len(self.nll) == len(self.tokens) == len(self.correct):
            raise RecordError(f"{len(self.nll)} per-example losses, {len(self.tokens)} token counts and "
                              f"{len(self.correct)} correct counts: one of each per example")
        if self.exact_match and len(self.exact_match) != len(self.nll):
            raise RecordError(f"{len(self.exact_match)} exact-match bits for {len(self.nll)} examples: one per "
                              "example, or none when the task has no checkable answer")
        if any(bit not in (0, 1) for bit in self.exact_match):
            raise RecordError("exact-match bits must each be 0 or 1")

    @property
    def mean_nll(self) -> list[float]:
        """Each example's NLL per completion token."""
        return [nll / max(tokens, 1) for nll, tokens in zip(self.nll, self.tokens)]

    @property
    def token_accuracy(self) -> list[float]:
        """Each example's share of argmax-correct completion tokens."""
        return [hits / max(tokens, 1) for hits, tokens in zip(self.correct, self.tokens)]

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"nll": list(self.nll), "tokens": list(self.tokens), "correct": list(self.correct)}
        if self.exact_match:  # a task without a checkable answer writes what it wrote before
            data["exact_match"] = list(self.exact_match)
        return data

    @classmethod
    def from_dict(cls, data: Any) -> "ExampleLosses":
        data = mapping(data, "example_losses")
        return cls([float(x) for x in items(data.get("nll"), "nll")],
                   [int(x) for x in items(data.get("tokens"), "tokens")],
                   [int(x) for x in items(data.get("correct"), "correct")],
                   [int(x) for x in items(data.get("exact_match", []), "exact_match")])


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
    status: Status
    run_id: str
    labels: Labels
    config: dict[str, Any]  # resolved
    config_hash: str
    plan: Plan
    metrics: dict[str, float] = field(default_factory=dict)  # final test/<name>, val/<name>
    history: list[dict[str, float]] = field(default_factory=list)  # validation curve
    best: dict[str, float] | None = None  # best validation point
    predictions: dict[str, SplitPredictions] = field(default_factory=dict)  # "val", "test"
    example_losses: dict[str, ExampleLosses] = field(default_factory=dict)  # SFT: "val", "test"
    dropped_completions: dict[str, int] = field(default_factory=dict)  # SFT: split -> too long for max_length
    collapsed: bool = False  # completed, but the validation metric is at chance
    convergence: Convergence | None = None  # whether validation was still improving at the end
    analysis: Analysis | None = None
    cost: Cost = field(default_factory=Cost)
    provenance: Provenance = field(default_factory=Provenance)
    identity: Identity = field(default_factory=Identity)
    error: RunError | None = None
    nonfinite: list[str] = field(default_factory=list)  # fields whose NaN/inf became null
    merge_max_abs_diff: float | None = None
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if self.status not in Status.__members__:
            raise RecordError(f"status must be one of {', '.join(Status)}, got {self.status!r}")
        object.__setattr__(self, "status", Status(self.status))  # a plain name becomes the member

    def to_dict(self) -> dict[str, Any]:
        data = {
            "status": self.status.value, "run_id": self.run_id, "labels": self.labels.to_dict(),
            "config": self.config, "config_hash": self.config_hash, "plan": self.plan.to_dict(),
            "metrics": dict(self.metrics), "history": [dict(p) for p in self.history],
            "best": None if self.best is None else dict(self.best),
            "predictions": {split: p.to_dict() for split, p in self.predictions.items()},
            "collapsed": self.collapsed,
            "convergence": None if self.convergence is None else self.convergence.to_dict(),
            "analysis": None if self.analysis is None else self.analysis.to_dict(),
            "cost": vars(self.cost).copy(), "provenance": self.provenance.to_dict(),
            "identity": self.identity.to_dict(),
            "error": None if self.error is None else vars(self.error).copy(),
            "nonfinite": list(self.nonfinite), "merge_max_abs_diff": self.merge_max_abs_diff,
            "schema_version": self.schema_version,
        }
        if self.example_losses or self.dropped_completions:  # SFT runs only: classification records stay as they were
            data["example_losses"] = {split: losses.to_dict() for split, losses in self.example_losses.items()}
            data["dropped_completions"] = dict(self.dropped_completions)
        cleaned, nonfinite = finite(data)
        cleaned["nonfinite"] = sorted(set(self.nonfinite) | set(nonfinite))
        return cleaned

    @classmethod
    def from_dict(cls, data: Any) -> "RunRecord":
        """A record from parsed JSON, of this version or an older one; RecordError
        naming the problem when the shape is wrong."""
        if not isinstance(data, dict):
            raise RecordError("not a JSON object")
        if data.get("status") not in Status.__members__:
            raise RecordError(f"not a run record (status {data.get('status')!r})")
        try:
            config = mapping(data.get("config"), "config")
            plan = Plan.from_dict(data.get("plan"))
            analysis = data.get("analysis")
            return cls(
                status=Status(data["status"]),
                run_id=str(data.get("run_id") or ""),
                labels=_labels(data.get("labels"), config, plan),
                config=config,
                config_hash=str(data.get("config_hash") or ""),
                plan=plan,
                metrics=_metrics(data.get("metrics")),
                history=_history(data.get("history")),
                best=mapping(data.get("best"), "best") or None,
                predictions={k: SplitPredictions.from_dict(v)
                             for k, v in mapping(data.get("predictions"), "predictions").items()},
                example_losses={k: ExampleLosses.from_dict(v)
                                for k, v in mapping(data.get("example_losses"), "example_losses").items()},
                dropped_completions={str(k): int(v) for k, v in
                                     mapping(data.get("dropped_completions"), "dropped_completions").items()},
                collapsed=bool(data.get("collapsed", False)),
                convergence=Convergence.from_dict(data.get("convergence")),
                analysis=Analysis.from_dict(analysis) if analysis else None,
                cost=_cost(data.get("cost")),
                provenance=Provenance.from_dict(data.get("provenance")),
                identity=Identity.from_dict(data.get("identity")),
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
        return self.provenance.ended_at or ""


def _metrics(value: Any) -> dict[str, float]:
    metrics = mapping(value, "metrics")
    return {k: float(v) for k, v in metrics.items() if v is not None}


def _history(value: Any) -> list[dict[str, float]]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(p, dict) for p in value):
        raise RecordError("malformed record: 'history' is not a list of objects")
    return value


def _cost(value: Any) -> Cost:
    return known(Cost, value, "cost")


def _error(value: Any) -> RunError | None:
    if not value:
        return None
    if isinstance(value, dict):
        return RunError(str(value.get("type", "Error")), str(value.get("message", "")))
    return RunError("Error", str(value))


def _labels(value: Any, config: dict[str, Any], plan: Plan) -> Labels:
    """The record's labels. A version-1 record lacks some: they come from its config, and
    its target set from its plan, which the planner named (every plan holds the name); a
    record without one is named by the same rule from the requested matrices as written."""
    stored = mapping(value, "labels")
    targets = config.get("targets") if isinstance(config.get("targets"), dict) else {}
    requested = [str(m) for m in targets.get("matrices") or []]
    target_set = plan.target_set or (target_set_name(as_written(requested), as_written) if requested else "None")
    fallback = Labels.from_config(config, target_set=target_set)
    variant = stored.get("variant")
    return Labels(
        model=str(stored.get("model", fallback.model)), task=str(stored.get("task", fallback.task)),
        target_set=str(stored.get("target_set", fallback.target_set)),
        budget=str(stored.get("budget", fallback.budget)),
        budget_scale=float(stored.get("budget_scale") or fallback.budget_scale),
        layers=str(stored.get("layers") or fallback.layers),
        variant=({str(k): None if v is None else str(v) for k, v in variant.items()}
                 if isinstance(variant, dict) else parse_variant(variant or "")),
        seed=fallback.seed if "seed" not in stored else None if stored["seed"] is None else int(stored["seed"]),
    )


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
    if previous and previous.record and previous.record.status == Status.completed:
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
        if record and record.status == Status.completed and record.config_hash == config_hash:
            return record
    return None
