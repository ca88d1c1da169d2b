"""Run records (`result.json`) on disk: written atomically when a run ends, read back
for reports and for skipping finished runs."""

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RECORD_NAME = "result.json"
STATUSES = ("completed", "failed", "diverged")


@dataclass(frozen=True)
class LoadedRecord:
    path: Path
    record: dict[str, Any] | None  # None when the file could not be read as a record
    problem: str | None = None  # why it could not, e.g. "truncated JSON"


def write_record(run_dir: Path, record: dict[str, Any]) -> Path:
    """Write `record` as run_dir/result.json by write-then-rename, so a reader never
    sees half a file and a killed writer leaves no record at all."""
    if record.get("status") not in STATUSES:
        raise ValueError(f"record status must be one of {STATUSES}, got {record.get('status')!r}")
    run_dir.mkdir(parents=True, exist_ok=True)
    target = run_dir / RECORD_NAME
    fd, tmp = tempfile.mkstemp(prefix=".result.", suffix=".tmp", dir=run_dir)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(record, handle, indent=2, sort_keys=True, allow_nan=False, default=str)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, shared_file_mode())  # mkstemp makes it private; collaborators read records
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def shared_file_mode() -> int:
    """0o666 less the process umask: the mode a plain open() would have given."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def read_record(path: Path) -> LoadedRecord:
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        return LoadedRecord(path, None, f"unreadable record ({type(err).__name__}: {err})")
    if not isinstance(record, dict) or record.get("status") not in STATUSES:
        return LoadedRecord(path, None, "not a run record (no valid 'status')")
    return LoadedRecord(path, record)


def find_records(sweep_dir: Path) -> list[LoadedRecord]:
    """Every result.json below sweep_dir, sorted by path, readable or not."""
    return [read_record(p) for p in sorted(Path(sweep_dir).rglob(RECORD_NAME))]


def completed_record(run_dir: Path, config_hash: str) -> dict[str, Any] | None:
    """The run's completed record if it was made from the same config, else None."""
    loaded = read_record(run_dir / RECORD_NAME)
    record = loaded.record
    if record and record["status"] == "completed" and record.get("config_hash") == config_hash:
        return record
    return None
