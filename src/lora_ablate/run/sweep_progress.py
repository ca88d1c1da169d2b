"""How far a sweep is, read from its records while the launcher runs (any launcher: the
cells may run in this process, in workers or on other machines sharing the folder): a
line whenever a cell ends, with cells done of all, completed, failed and skipped, and the
time left, estimated from the cells that ran in this sweep."""

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from lora_ablate.records import RECORD_NAME, Status, completed_record, read_record

log = logging.getLogger(__name__)

POLL_SECONDS = 2.0


@dataclass
class Tally:
    cells: int
    skipped: int = 0  # a completed record of the same config was there before the sweep
    ended: dict[str, str] = field(default_factory=dict)  # run folder -> status, this sweep

    @property
    def done(self) -> int:
        return self.skipped + len(self.ended)

    def line(self, elapsed: float) -> str:
        statuses = list(self.ended.values())
        completed = statuses.count(Status.completed)
        failed = len(statuses) - completed
        text = (f"sweep: {self.done} of {self.cells} cells done ({completed} completed, {failed} failed "
                f"or stopped, {self.skipped} skipped)")
        left = self.cells - self.done
        if left and self.ended:
            text += f"; about {_duration(elapsed / len(self.ended) * left)} left"
        return text


class SweepProgress:
    """A thread that watches the run folders of a sweep's cells (run folder -> the cell's
    config hash) and logs a Tally line whenever a cell ends."""

    def __init__(self, sweep_dir: Path, cells: dict[str, str | None], poll_seconds: float = POLL_SECONDS):
        self.sweep_dir = Path(sweep_dir)
        self.cells = cells
        self.poll_seconds = poll_seconds
        self.tally = Tally(len(cells))
        self._skipped: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="sweep-progress", daemon=True)
        self._started = 0.0

    def __enter__(self) -> "SweepProgress":
        self._started = time.time()
        for run_dir, config_hash in self.cells.items():
            if config_hash and completed_record(self.sweep_dir / run_dir, config_hash) is not None:
                self._skipped.add(run_dir)
        self.tally.skipped = len(self._skipped)
        log.info("sweep: %d cells, %d of them completed before (skipped)", self.tally.cells, self.tally.skipped)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._update()

    def _watch(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            self._update()

    def _update(self) -> None:
        before = len(self.tally.ended)
        for run_dir, config_hash in self.cells.items():
            if run_dir in self._skipped or run_dir in self.tally.ended:
                continue
            status = self._ended(self.sweep_dir / run_dir / RECORD_NAME, config_hash)
            if status:
                self.tally.ended[run_dir] = status
        if len(self.tally.ended) != before:
            log.info(self.tally.line(time.time() - self._started))

    def _ended(self, path: Path, config_hash: str | None) -> str | None:
        """The status of a record written since the sweep started, for the cell's config."""
        try:
            if path.stat().st_mtime < self._started:
                return None
        except OSError:
            return None
        record = read_record(path).record
        if record is None or (config_hash and record.config_hash != config_hash):
            return None
        return str(getattr(record.status, "value", record.status))


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
