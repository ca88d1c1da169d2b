"""Hydra callbacks: a multirun ends by writing its report."""

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)


class ReportCallback(Callback):
    def __init__(self, baseline: str = "qv", metric: str | None = None):
        self.baseline = baseline
        self.metric = metric

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from lora_ablate.errors import ConfigError
        from lora_ablate.report.render import write_report

        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            folder = write_report(sweep_dir, baseline=self.baseline, metric=self.metric)
        except ConfigError as err:
            log.error("no report for %s: %s", sweep_dir, err)
            return
        print(f"Report: {folder / 'report.html'}")
