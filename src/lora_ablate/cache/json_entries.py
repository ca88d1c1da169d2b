"""Single-file cache entries: JSON that carries the sha256 of its own content, written
atomically and checked when read.

The file is `{"sha256": "<64 hex>", "content": <JSON>}` with the content's bytes exactly
as hashed, so it stays plain JSON and is checked without encoding the content again."""

import hashlib
import json
from pathlib import Path
from typing import Any

from lora_ablate.files import write_atomic

_HEAD = '{"sha256": "'
_MIDDLE = '", "content": '
_DIGEST_LENGTH = 64


class EntryMismatch(ValueError):
    """The entry's content is not what it was written with (edited or damaged)."""


def write_json_entry(path: Path, content: Any) -> None:
    body = json.dumps(content, separators=(",", ":"), sort_keys=True)
    digest = hashlib.sha256(body.encode()).hexdigest()
    write_atomic(path, f"{_HEAD}{digest}{_MIDDLE}{body}}}")


def read_json_entry(path: Path) -> Any:
    """The content written by `write_json_entry`. FileNotFoundError if there is none;
    EntryMismatch if the file is not such an entry or its content changed since."""
    raw = path.read_bytes()
    start = len(_HEAD) + _DIGEST_LENGTH + len(_MIDDLE)
    head, digest, middle = raw[: len(_HEAD)], raw[len(_HEAD) : len(_HEAD) + _DIGEST_LENGTH], raw[start - len(_MIDDLE) : start]
    if head != _HEAD.encode() or middle != _MIDDLE.encode() or not raw.endswith(b"}"):
        raise EntryMismatch("it is not a digest-checked entry (truncated, or written by something else)")
    body = raw[start:-1]
    if hashlib.sha256(body).hexdigest().encode() != digest:
        raise EntryMismatch("its content does not match the sha256 written with it (edited or damaged)")
    return json.loads(body)
