"""Records that could not be read, named on the terminal once a report is written: the
report lists them only in a section at its end, which a user who reads the terminal (and
sees exit status 0) would never open."""

import csv
import sys
from pathlib import Path
from typing import TextIO

from lora_ablate.records import CORRUPT

SHOWN = 5  # records named one per line; the rest are counted
REASON_CHARS = 160  # a reason is cut to one short line (runs.csv holds it whole)


def corrupt_records(report_dir: Path) -> list[tuple[str, str]]:
    """(path below the sweep folder, why) of every record the report in `report_dir` could
    not read, from its runs.csv (none when there is no runs.csv to read: a warning never
    fails a command whose report was written)."""
    try:
        with (Path(report_dir) / "runs.csv").open(newline="", encoding="utf-8") as table:
            return [(row.get("path") or "?", row.get("error") or "")
                    for row in csv.DictReader(table) if row.get("status") == CORRUPT]
    except (OSError, UnicodeDecodeError, csv.Error):
        return []


def corrupt_lines(report_dir: Path, sweep_dir: Path, prog: str) -> list[str]:
    """A warning line, one line per unreadable record (SHOWN at most, then how many more),
    or nothing when every record was read."""
    found = corrupt_records(report_dir)
    if not found:
        return []
    records = "record" if len(found) == 1 else "records"
    lines = [f"{prog}: warning: {len(found)} {records} under {sweep_dir} could not be read and "
             "are left out of the report:"]
    lines += [f"  {path}: {_one_line(why)}" for path, why in found[:SHOWN]]
    if len(found) > SHOWN:
        lines.append(f"  and {len(found) - SHOWN} more (runs.csv in {report_dir} lists every one, "
                     f"status {CORRUPT})")
    return lines


def warn_corrupt(report_dir: Path, sweep_dir: Path, prog: str, stream: TextIO | None = None) -> None:
    """Print corrupt_lines (to stderr unless `stream` is given)."""
    for line in corrupt_lines(report_dir, sweep_dir, prog):
        print(line, file=stream or sys.stderr)


def _one_line(text: str) -> str:
    text = " ".join(text.split()) or "unreadable"
    return text if len(text) <= REASON_CHARS else text[:REASON_CHARS - 1] + "…"
