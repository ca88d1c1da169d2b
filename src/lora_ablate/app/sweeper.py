"""Hydra's basic sweeper (same grid syntax, `hydra.sweeper.params`), plus: every cell is
planned and its data checked before the first one trains, the sweep folder is fixed once
(workers never re-evaluate a timestamp) with a manifest of its cells, and a failed cell is
recorded without stopping the others."""

import json
import logging
import os
import sys
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf, open_dict, read_write
from omegaconf.errors import OmegaConfBaseException

from lora_ablate.config.schema import RunConfig
from lora_ablate.errors import ConfigError

log = logging.getLogger(__name__)


def check_cell(cell: DictConfig, task_checks: dict[str, str | None]) -> None:
    """Everything a run would reject, short of loading weights; task data checked once per task config."""
    from lora_ablate.plan.resolve import resolve_run
    from lora_ablate.data.tasks import load_task

    run_cfg: RunConfig = OmegaConf.to_object(cell)  # the schema's checks (__post_init__)
    resolve_run(run_cfg)
    task_key = OmegaConf.to_yaml(cell.task)
    if task_key not in task_checks:
        try:
            load_task(run_cfg.task)  # reads, checks and splits the data
            task_checks[task_key] = None
        except ConfigError as err:
            task_checks[task_key] = str(err)
    if task_checks[task_key]:
        raise ConfigError(task_checks[task_key])


class ValidatingSweeper(Sweeper):
    def __init__(self, max_batch_size: int | None = None, params: dict[str, str] | None = None):
        super().__init__()
        self.max_batch_size = max_batch_size
        self.params = dict(params or {})

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.hydra_context = hydra_context
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def _check_all_cells(self, batches: list[list[list[str]]]) -> None:
        loader = self.hydra_context.config_loader
        problems, task_checks = [], {}
        for batch in batches:
            for overrides in batch:
                try:
                    cell = loader.load_sweep_config(self.config, list(overrides))
                    with read_write(cell), open_dict(cell):
                        del cell["hydra"]  # as Hydra does before handing a job its config
                    check_cell(cell, task_checks)
                except ConfigError as err:
                    problems.append(f"[{','.join(overrides)}] {err}")
                except (HydraException, OmegaConfBaseException) as err:  # the cell does not compose
                    problems.append(f"[{','.join(overrides)}] {str(err).strip().splitlines()[0]}")
        if problems:
            message = f"{len(problems)} of {sum(map(len, batches))} sweep cells are invalid; nothing was trained:\n"
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise ConfigError(message + "\n".join(problems))
            print("lora-ablate: error: " + message + "\n".join(f"  - {p}" for p in problems), file=sys.stderr)
            sys.exit(2)

    def _pin_sweep_dir(self) -> Path:
        """Resolve hydra.sweep.dir once and hand every job the literal folder (as a Hydra
        override, since each job's config is composed again, maybe in another process)."""
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        hydra_overrides = list(self.config.hydra.overrides.hydra)
        chosen = self.config.get("sweep_name") or any(o.startswith("hydra.sweep.dir=") for o in hydra_overrides)
        if not chosen:  # ad-hoc: a second sweep started in the same second gets its own folder
            base, n = sweep_dir, 2
            while sweep_dir.exists():
                sweep_dir, n = base.with_name(f"{base.name}_{n}"), n + 1
        quoted = str(sweep_dir).replace("'", "\\'")
        with read_write(self.config), open_dict(self.config):
            self.config.hydra.sweep.dir = str(sweep_dir)
            self.config.hydra.overrides.hydra.append(f"hydra.sweep.dir='{quoted}'")
        return sweep_dir

    def sweep(self, arguments: list[str]) -> Any:
        from hydra.core.override_parser.overrides_parser import OverridesParser

        params = [f"{key}={value}" for key, value in self.params.items()] + list(arguments)
        parsed = OverridesParser.create(config_loader=self.hydra_context.config_loader).parse_overrides(params)
        batches = BasicSweeper.split_arguments(parsed, self.max_batch_size)
        self._check_all_cells(batches)
        sweep_dir = self._pin_sweep_dir()
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        write_manifest(sweep_dir, self.config.get("sweep_name"), list(self.config.hydra.overrides.task),
                       [cell for batch in batches for cell in batch])
        returns: list[Sequence[JobReturn]] = []
        job_index = 0
        with self._stopping_workers(sweep_dir):
            for batch in batches:
                results = self.launcher.launch(batch, initial_job_idx=job_index)
                for overrides, result in zip(batch, results):
                    if result.status == JobStatus.FAILED:  # its record says why; the sweep goes on
                        log.error("run %s failed: %s", ",".join(overrides), result._return_value)
                job_index += len(batch)
                returns.append(results)
        return returns

    def _stopping_workers(self, sweep_dir: Path) -> AbstractContextManager[None]:
        """Launchers that run cells in other processes get their workers stopped, and
        their records written, on SIGINT/SIGTERM; Hydra's basic launcher runs each cell in
        this process, where the runner handles the signals itself."""
        from hydra._internal.core_plugins.basic_launcher import BasicLauncher

        from lora_ablate.run.workers import stop_workers_on_signal

        if isinstance(self.launcher, BasicLauncher):
            return nullcontext()
        return stop_workers_on_signal(sweep_dir)


def write_manifest(sweep_dir: Path, sweep_name: str | None, overrides: list[str], cells: list[list[str]]) -> Path:
    """SWEEP_DIR/manifest.json: the sweep's command-line overrides and every cell with its
    run folder (named as hydra.sweep.subdir names it). A rerun adds its cells to those
    already listed."""
    from lora_ablate.files import write_atomic
    from lora_ablate.identity import run_dirname

    path = Path(sweep_dir) / "manifest.json"
    try:
        previous = json.loads(path.read_text())
    except (OSError, ValueError):
        previous = {}
    listed = {c["run_dir"]: c for c in previous.get("cells", []) if isinstance(c, dict) and "run_dir" in c}
    for cell in cells:
        listed.setdefault(run_dirname(list(cell)), {"overrides": list(cell), "run_dir": run_dirname(list(cell))})
    manifest = {
        "sweep_name": sweep_name,
        "created": previous.get("created") or datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "overrides": overrides,
        "cells": list(listed.values()),  # first listed first
    }
    return write_atomic(path, json.dumps(manifest, indent=2) + "\n")
