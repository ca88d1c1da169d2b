"""Where the cache is, and the small file helpers every part of it shares."""

import json
import os
import shutil
from pathlib import Path

from lora_ablate.files import write_atomic

CACHE_ENV = "LORA_ABLATE_CACHE"
PARTIAL_PREFIX = ".partial-"  # hidden scratch folders; never read as results


def cache_root() -> Path:
    """$LORA_ABLATE_CACHE if set (and non-empty), else ~/.cache/lora-ablate."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "lora-ablate"


def remove_partials(folder: Path, stem: str) -> None:
    """Remove scratch folders for `stem`; call with stem's lock held, so only a dead
    process can have left them. (mkdtemp's random tail has no '-', so the rsplit matches
    `stem` exactly, never a longer name whose scratch folder another process may be filling.)"""
    for path in folder.glob(f"{PARTIAL_PREFIX}{stem}-*"):
        if path.name.rsplit("-", 1)[0] == f"{PARTIAL_PREFIX}{stem}":
            shutil.rmtree(path, ignore_errors=True)


def write_json_atomic(path: Path, data: object, indent: int | None = 2) -> None:
    """Write-then-rename (files.write_atomic): a reader never sees half a file."""
    write_atomic(path, json.dumps(data, indent=indent, sort_keys=True))


def write_plain_file(path: Path, text: str) -> None:
    """A file in a folder that is renamed into place as a whole (no rename needed here)."""
    with open(path, "w") as handle:  # a plain open(): the umask decides the mode
        handle.write(text)
