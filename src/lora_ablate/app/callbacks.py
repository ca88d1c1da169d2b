"""Hydra callbacks: a multirun ends by writing its report, with the `report.*` settings."""

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


class ReportCallback(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from lora_ablate.errors import ConfigError

        sweep_dir = Path(str(config.hydra.sweep.dir))
        if config.get("dry_run") or not any(sweep_dir.rglob("result*.json")):
            log.info("no report for %s: nothing was trained", sweep_dir)
            return
        from lora_ablate.report.render import write_report

        report = OmegaConf.to_container(config.report, resolve=True) if "report" in config else {}
        try:
            folder = write_report(sweep_dir, baseline=report.get("baseline"), metric=report.get("metric"),
                                  tune=list(report.get("tune") or []), confidence=report.get("confidence", 0.95))
        except ConfigError as err:
            log.error("no report for %s: %s", sweep_dir, err)
            return
        print(f"Report: {folder / 'report.html'}")
