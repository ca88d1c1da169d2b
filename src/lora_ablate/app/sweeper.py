"""Hydra's basic sweeper (same grid syntax, `hydra.sweeper.params`), plus: every cell is
planned and its data checked before the first one trains, the sweep folder is fixed once
(workers never re-evaluate a timestamp) with a manifest of its cells, and a failed cell is
recorded without stopping the others."""

import logging
import os
import sys
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

# Hydra's own grid expansion, so a grid means here what it means in Hydra (pinned by
# tests/test_cli_early_errors.py, like app/overrides.py's use of Hydra's argument parser).
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf, open_dict, read_write
from omegaconf.errors import OmegaConfBaseException

from lora_ablate.app.overrides import composition_problem
from lora_ablate.app.preflight import check_run
from lora_ablate.app.sweep_folder import check_sweep_folder
from lora_ablate.errors import ConfigError
from lora_ablate.files import disk_full_message, is_disk_full
from lora_ablate.report.staged import SeedPlan
from lora_ablate.report.sweep_manifest import Manifest, ManifestCell, read_manifest

log = logging.getLogger(__name__)


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

    def _check_all_cells(self, batches: list[list[list[str]]]) -> tuple[dict[str, str], dict[str, int]]:
        """The config hash of every cell (as its record will carry it) and its seed, by run
        folder; exit 2 listing every bad cell."""
        from lora_ablate.identity import config_hash, run_dirname

        loader = self.hydra_context.config_loader
        problems, task_checks, hashes, seeds = [], {}, {}, {}
        for batch in batches:
            for overrides in batch:
                try:
                    cell = loader.load_sweep_config(self.config, list(overrides))
                    with read_write(cell), open_dict(cell):
                        del cell["hydra"]  # as Hydra does before handing a job its config
                    checked = check_run(cell, task_checks)
                    hashes[run_dirname(list(overrides))] = config_hash(OmegaConf.to_container(
                        OmegaConf.structured(checked.config), resolve=True, enum_to_str=True))
                    seeds[run_dirname(list(overrides))] = int(checked.config.seed)
                except ConfigError as err:
                    problems.append(f"[{','.join(overrides)}] {err}")
                except (HydraException, OmegaConfBaseException) as err:  # the cell does not compose
                    problems.append(f"[{','.join(overrides)}] {composition_problem(err)}")
        if problems:
            message = f"{len(problems)} of {sum(map(len, batches))} sweep cells are invalid; nothing was trained:\n"
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise ConfigError(message + "\n".join(problems))
            print("lora-ablate: error: " + message + "\n".join(f"  - {p}" for p in problems), file=sys.stderr)
            sys.exit(2)
        return hashes, seeds

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
        hashes, seeds = self._check_all_cells(batches)
        plan = self._seed_plan(seeds)
        sweep_dir = self._pin_sweep_dir()
        try:
            check_sweep_folder(sweep_dir, list(hashes), reuse=bool(self.config.get("sweep_reuse")))
        except ConfigError as err:
            _refuse(str(err))
        try:
            sweep_dir.mkdir(parents=True, exist_ok=True)
            OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
            write_manifest(sweep_dir, self.config.get("sweep_name"), list(self.config.hydra.overrides.task),
                           [cell for batch in batches for cell in batch], hashes,
                           stage=1 if plan else None, seed_plan=plan)
            returns = self._launch(batches, sweep_dir, hashes)
            if plan is not None:
                returns += self._stage_two(batches, sweep_dir, plan, first_job=len(hashes))
            return returns
        except OSError as err:
            if not is_disk_full(err) or os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            print(f"lora-ablate: error: {disk_full_message(err, sweep_dir)}", file=sys.stderr)
            sys.exit(1)

    def _seed_plan(self, seeds: dict[str, int]) -> SeedPlan | None:
        """The adaptive-seeds design when adaptive.enabled (stage 1: the cells' own seeds;
        alpha = 1 − report.confidence); exit 2 when the sweep cannot carry it."""
        adaptive = self.config.get("adaptive")
        if adaptive is None or not adaptive.get("enabled"):
            return None
        stage1 = tuple(sorted(set(seeds.values())))
        alpha = 1 - float(self.config.report.confidence)
        try:
            return SeedPlan(stage1, int(adaptive.max_seeds), float(adaptive.alpha_stage1),
                            float(adaptive.continue_p), alpha)
        except ValueError as err:
            _refuse(f"adaptive.enabled=true cannot run this sweep: {err} Stage 1 is the sweep's "
                    f"own seeds ({', '.join(map(str, stage1))}: at least 2 and at most "
                    f"adaptive.max_seeds), alpha is 1 − report.confidence "
                    f"({alpha:g}) and adaptive.alpha_stage1 must lie below it.")
        return None  # unreachable: _refuse exits

    def _stage_two(self, batches: list[list[list[str]]], sweep_dir: Path, plan: SeedPlan,
                   first_job: int) -> list[Sequence[JobReturn]]:
        """The stage-1 cells of the target sets that continue (and of their groups'
        baselines) again with each new seed, checked like every cell, then launched."""
        from lora_ablate.identity import run_dirname
        from lora_ablate.report.adaptive import stage_two

        report = self.config.report
        try:
            decided = stage_two(sweep_dir, plan, metric=report.get("metric"), baseline=report.get("baseline"))
        except ConfigError as err:
            _refuse(f"Stage 1 of this adaptive sweep ran, but its stage 2 cannot be decided "
                    f"from the stage-1 records: {err}")
        cells: dict[str, list[str]] = {}
        for cell in (c for batch in batches for c in batch):
            if run_dirname(list(cell)) in decided.run_dirs:
                kept = [o for o in cell if o.split("=", 1)[0].lstrip("+~") != "seed"]
                for seed in plan.new_seeds:
                    cells.setdefault(run_dirname([*kept, f"seed={seed}"]), [*kept, f"seed={seed}"])
        log.info(decided.line(len(cells)))
        if not cells:
            return []
        size = self.max_batch_size or len(cells)
        listed = list(cells.values())
        stage2 = [listed[i:i + size] for i in range(0, len(listed), size)]
        hashes, _ = self._check_all_cells(stage2)
        write_manifest(sweep_dir, self.config.get("sweep_name"), list(self.config.hydra.overrides.task),
                       listed, hashes, stage=2, seed_plan=plan)
        return self._launch(stage2, sweep_dir, hashes, first_job=first_job)

    def _launch(self, batches: list[list[list[str]]], sweep_dir: Path, hashes: dict[str, str],
                first_job: int = 0) -> list[Sequence[JobReturn]]:
        from lora_ablate.run.progress import SWEEP_CELLS_ENV

        returns: list[Sequence[JobReturn]] = []
        os.environ[SWEEP_CELLS_ENV] = str(first_job + len(hashes))  # "cell k of N" in each run's log
        try:
            self._launch_batches(batches, sweep_dir, hashes, returns, first_job)
        finally:
            os.environ.pop(SWEEP_CELLS_ENV, None)
        return returns

    def _launch_batches(self, batches: list[list[list[str]]], sweep_dir: Path, hashes: dict[str, str],
                        returns: list[Sequence[JobReturn]], first_job: int = 0) -> None:
        from lora_ablate.run.sweep_progress import SweepProgress

        job_index = first_job
        with self._stopping_workers(sweep_dir), SweepProgress(sweep_dir, hashes):
            for batch in batches:
                results = self.launcher.launch(batch, initial_job_idx=job_index)
                for overrides, result in zip(batch, results):
                    if result.status == JobStatus.FAILED:  # its record says why; the sweep goes on
                        if is_disk_full(result._return_value):
                            raise result._return_value
                        log.error("run %s failed: %s", ",".join(overrides), result._return_value)
                job_index += len(batch)
                returns.append(results)

    def _stopping_workers(self, sweep_dir: Path) -> AbstractContextManager[None]:
        """Launchers that run cells in other processes get their workers stopped, and
        their records written, on SIGINT/SIGTERM; Hydra's basic launcher runs each cell in
        this process, where the runner handles the signals itself."""
        from hydra._internal.core_plugins.basic_launcher import BasicLauncher

        from lora_ablate.run.workers import stop_workers_on_signal

        if isinstance(self.launcher, BasicLauncher):
            return nullcontext()
        return stop_workers_on_signal(sweep_dir)


def _refuse(message: str) -> None:
    """The project's one-paragraph error and exit status 2 (a traceback with HYDRA_FULL_ERROR=1)."""
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        raise ConfigError(message)
    print(f"lora-ablate: error: {message}", file=sys.stderr)
    sys.exit(2)


def write_manifest(sweep_dir: Path, sweep_name: str | None, overrides: list[str], cells: list[list[str]],
                   hashes: dict[str, str] | None = None, *, stage: int | None = None,
                   seed_plan: SeedPlan | None = None) -> Path:
    """SWEEP_DIR/manifest.json: the sweep's command-line overrides and every cell with its
    run folder (named as hydra.sweep.subdir names it) and its current config hash, which
    decides which of the folder's records the report uses. A rerun adds its cells to those
    already listed and brings their hashes up to date. An adaptive sweep also records its
    design (`adaptive`, which the report's tests follow) and each cell's `stage`; a later
    run without one keeps the design, since the seeds were chosen under it."""
    from lora_ablate.identity import run_dirname

    # (a malformed manifest was refused by check_sweep_folder before anything ran)
    previous = read_manifest(sweep_dir) or Manifest(sweep_name, created=None)
    hashes = hashes or {}
    added = []
    for cell in cells:
        run_dir = run_dirname(list(cell))
        added.append(ManifestCell(run_dir, tuple(cell), hashes.get(run_dir), stage))
    manifest = replace(previous.with_cells(added), sweep_name=sweep_name, overrides=tuple(overrides),
                       created=previous.created or datetime.now(timezone.utc).isoformat(timespec="seconds"),
                       seed_plan=seed_plan or previous.seed_plan)
    return manifest.write(sweep_dir)
