"""Experiment loggers. The run record is the source of truth; wandb is a view of it."""

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from lora_ablate.config.schema import LoggerConfig

if TYPE_CHECKING:
    from lora_ablate.records import RunRecord



class Logger(Protocol):
    def log(self, values: dict[str, float], step: int) -> None: ...
    def finish(self, record: "RunRecord") -> None: ...


class NullLogger:
    def log(self, values: dict[str, float], step: int) -> None:
        pass

    def finish(self, record: "RunRecord") -> None:
        pass


class WandbLogger:
    """One wandb run per job: group = sweep, job_type = target set. The plan is logged as a
    table and lora_params/head_params go into the summary; a run that did not complete
    finishes with exit code 1, so wandb shows it as failed."""

    def __init__(self, cfg: LoggerConfig, *, name: str, group: str | None, job_type: str, config: dict,
                 run_dir: Path, plan: dict[str, Any]):
        import wandb

        mode = os.environ.get("WANDB_MODE", cfg.mode)
        run_dir.mkdir(parents=True, exist_ok=True)
        self._wandb = wandb
        self._run = wandb.init(
            project=cfg.project, entity=cfg.entity, name=name, group=group, job_type=job_type,
            tags=list(cfg.tags), config=config, dir=str(run_dir), mode=mode, reinit="create_new",
        )
        modules = plan.get("modules") or []
        columns = ["name", "matrix", "layer", "d_in", "d_out", "rank", "params"]
        self._run.log({"plan": wandb.Table(columns=columns, data=[[m.get(c) for c in columns] for m in modules])})
        self._run.summary.update({k: plan.get(k) for k in ("lora_params", "head_params", "base_params")})

    def log(self, values: dict[str, float], step: int) -> None:
        self._run.log(values, step=step)

    def finish(self, record: "RunRecord") -> None:
        self._run.summary.update(record.metrics | {"status": record.status, "collapsed": record.collapsed})
        self._run.finish(exit_code=0 if record.status == "completed" else 1)


def open_logger(cfg: LoggerConfig, **run_info: Any) -> Logger:
    if cfg.kind == "none":
        return NullLogger()
    return WandbLogger(cfg, **run_info)  # the schema's LoggerKind has no third kind
