"""Hydra callbacks: a multirun ends by writing its report, with the `report.*` settings."""

import logging
import os
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


class ReportCallback(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from lora_ablate.errors import ConfigError
        from lora_ablate.files import disk_full_message, is_disk_full

        sweep_dir = Path(str(config.hydra.sweep.dir))
        if config.get("dry_run") or not any(sweep_dir.rglob("result*.json")):
            log.info("no report for %s: nothing was trained", sweep_dir)
            return
        from lora_ablate.report.corrupt import warn_corrupt
        from lora_ablate.report.render import write_report

        report = OmegaConf.to_container(config.report, resolve=True) if "report" in config else {}
        try:
            folder = write_report(sweep_dir, baseline=report.get("baseline"), metric=report.get("metric"),
                                  tune=list(report.get("tune") or []), confidence=report.get("confidence", 0.95))
        except (ConfigError, OSError) as err:  # the runs are recorded; the command still fails
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            why = disk_full_message(err, sweep_dir) if is_disk_full(err) else str(err)
            print(f"lora-ablate: error: no report was written for {sweep_dir}: {why} The records are "
                  f"kept; write the report with `lora-ablate-report {sweep_dir}` once this is fixed.",
                  file=sys.stderr)
            sys.exit(1)
        print(f"Report: {folder / 'report.html'}")
        warn_corrupt(folder, sweep_dir, "lora-ablate")
