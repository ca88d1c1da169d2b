"""Experiment loggers. The run record is the source of truth; wandb is a view of it."""

import os
from pathlib import Path
from typing import Any, Protocol

from lora_ablate.config.schema import LoggerConfig
from lora_ablate.errors import ConfigError


class Logger(Protocol):
    def log(self, values: dict[str, float], step: int) -> None: ...
    def finish(self, summary: dict[str, Any]) -> None: ...


class NullLogger:
    def log(self, values: dict[str, float], step: int) -> None:
        pass

    def finish(self, summary: dict[str, Any]) -> None:
        pass


class WandbLogger:
    """One wandb run per job: group = sweep, job_type = target set."""

    def __init__(self, cfg: LoggerConfig, *, name: str, group: str | None, job_type: str, config: dict, run_dir: Path):
        import wandb

        mode = os.environ.get("WANDB_MODE", cfg.mode)
        self._run = wandb.init(
            project=cfg.project,
            entity=cfg.entity,
            name=name,
            group=group,
            job_type=job_type,
            tags=list(cfg.tags),
            config=config,
            dir=str(run_dir),
            mode=mode,
            reinit="create_new",
        )

    def log(self, values: dict[str, float], step: int) -> None:
        self._run.log(values, step=step)

    def finish(self, summary: dict[str, Any]) -> None:
        self._run.summary.update(summary)
        self._run.finish()


def open_logger(cfg: LoggerConfig, **run_info: Any) -> Logger:
    if cfg.kind == "none":
        return NullLogger()
    if cfg.kind == "wandb":
        if cfg.mode not in ("offline", "online", "disabled"):
            raise ConfigError(f"logger.mode '{cfg.mode}' is not valid; use offline, online or disabled.")
        return WandbLogger(cfg, **run_info)
    raise ConfigError(f"logger '{cfg.kind}' is not valid; use logger=none or logger=wandb.")
