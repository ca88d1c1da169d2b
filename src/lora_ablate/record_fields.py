"""Reading record JSON into typed sections: the error type, and tolerant field readers that
every section of the run record (records.py, record_plan.py, record_analysis.py,
record_origin.py) shares, so an older record that lacks a key loads with the default."""

import dataclasses
import functools
import math
from typing import Any, TypeVar

T = TypeVar("T")


class RecordError(ValueError):
    """A file that is not a readable run record; the message says why."""


def mapping(value: Any, name: str) -> dict[str, Any]:
    """`value` as an object ({} for null); RecordError naming `name` when it is something else."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise RecordError(f"malformed record: '{name}' is a {type(value).__name__}, not an object")
    return value


def items(value: Any, name: str) -> list[Any]:
    """`value` as a list ([] for null); RecordError naming `name` when it is something else."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise RecordError(f"malformed record: '{name}' is a {type(value).__name__}, not a list")
    return value


def known(kind: type[T], value: Any, name: str, **nested: Any) -> T:
    """A dataclass or NamedTuple from the keys of `value` it knows (older records lack some,
    newer ones may hold more); `nested` gives already-converted values for fields that are
    sections."""
    data = mapping(value, name)
    names = field_names(kind)
    if not nested and data.keys() == names:  # the common case, 10,000s of times per report
        return kind(**data)
    return kind(**({k: v for k, v in data.items() if k in names} | nested))


@functools.cache
def field_names(kind: type) -> frozenset[str]:
    if hasattr(kind, "_fields"):  # a NamedTuple
        return frozenset(kind._fields)
    return frozenset(f.name for f in dataclasses.fields(kind))


def optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


def optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


def finite(value: Any, path: str = "") -> tuple[Any, list[str]]:
    """The value with every NaN/inf float replaced by None, and where they were."""
    if isinstance(value, float) and not math.isfinite(value):
        return None, [path or "."]
    if isinstance(value, dict):
        out, bad = {}, []
        for k, v in value.items():
            out[k], where = finite(v, f"{path}.{k}" if path else str(k))
            bad += where
        return out, bad
    if isinstance(value, (list, tuple)):
        pairs = [finite(v, f"{path}[{i}]") for i, v in enumerate(value)]
        return [v for v, _ in pairs], [w for _, where in pairs for w in where]
    return value, []
