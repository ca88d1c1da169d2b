"""What a run is doing, as it does it: one log line per phase (so Hydra's job log,
lora-ablate.log, holds the run's story) and a progress bar for training, labelled with the
cell. In a sweep whose cells run side by side on one terminal, bars would overwrite each
other, so there the bar gives way to a log line every tenth of training."""

import logging
import os
from dataclasses import dataclass, field
from typing import Any

from tqdm.auto import tqdm

from lora_ablate.records import Labels

log = logging.getLogger(__name__)

SWEEP_CELLS_ENV = "LORA_ABLATE_SWEEP_CELLS"  # how many cells the sweep has, set by its sweeper
LOG_TENTHS = 10  # log lines per training without a bar
MAX_VARIANT = 40  # longer variants are cut in labels (the record and run folder hold them whole)


def cell_label(labels: Labels, job_index: int | None = None) -> str:
    """A short name for a run: its place in the sweep, target set, seed and variant."""
    parts = [labels.target_set, f"seed={labels.seed}"]
    if variant := labels.variant_text:
        parts.append(variant[:MAX_VARIANT - 1] + "…" if len(variant) > MAX_VARIANT else variant)
    if job_index is not None:
        cells = os.environ.get(SWEEP_CELLS_ENV)
        parts.insert(0, f"cell {job_index + 1}" + (f" of {cells}" if cells else "") + ":")
    return " ".join(parts)


@dataclass
class RunProgress:
    label: str = "run"
    bar: bool = True  # False: log lines instead of a bar (parallel sweeps)
    _bar: Any = field(default=None, repr=False)
    _steps: int = 0

    def phase(self, what: str, *args: Any) -> None:
        log.info(f"%s: {what}", self.label, *args)

    def start_training(self, steps: int) -> None:
        self._steps = steps
        self.phase("training %d steps", steps)
        if self.bar:
            self._bar = tqdm(total=steps, desc=self.label, unit="step", dynamic_ncols=True, mininterval=1.0)

    def stepped(self, step: int, loss: float | None = None, tokens_per_second: float | None = None) -> None:
        """One step done; loss and throughput when they were measured at this step."""
        measured = {} if loss is None else {"loss": f"{loss:.4f}", "tok_s": f"{tokens_per_second or 0:,.0f}"}
        if self._bar is not None:
            if measured:
                self._bar.set_postfix(measured, refresh=False)
            self._bar.update(1)
        elif step % max(1, self._steps // LOG_TENTHS) == 0 and step < self._steps:
            self.phase("step %d of %d%s", step, self._steps,
                       "".join(f", {k} {v}" for k, v in measured.items()))

    def end_training(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
