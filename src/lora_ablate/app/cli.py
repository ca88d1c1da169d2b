"""Thin command-line entry points: Hydra composes the config, plain functions do the work."""

import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from lora_ablate import __version__
from lora_ablate.app.store import register_configs, resource_dir
from lora_ablate.config.schema import RunConfig
from lora_ablate.errors import ConfigError
from lora_ablate.records import Status

log = logging.getLogger(__name__)


def full_error() -> bool:
    return os.environ.get("HYDRA_FULL_ERROR") == "1"


def exit_with(err: ConfigError) -> None:
    """The error's one paragraph on stderr and exit status 2 (a traceback only when
    HYDRA_FULL_ERROR=1 asks for one)."""
    if full_error():
        raise err
    print(f"lora-ablate: error: {err}", file=sys.stderr)
    sys.exit(2)


def user_errors_reported(task: Callable[[DictConfig], Any]) -> Callable[[DictConfig], Any]:
    def wrapped(cfg: DictConfig) -> Any:
        try:
            return task(cfg)
        except ConfigError as err:
            exit_with(err)
        except OSError as err:  # a full disk in a single run: one paragraph (a sweep stops on it)
            from hydra.core.hydra_config import HydraConfig
            from hydra.types import RunMode

            from lora_ablate.files import disk_full_message, is_disk_full

            hydra_cfg = HydraConfig.get()
            if not is_disk_full(err) or hydra_cfg.mode == RunMode.MULTIRUN or full_error():
                raise
            print(f"lora-ablate: error: {disk_full_message(err, Path(hydra_cfg.runtime.output_dir))}",
                  file=sys.stderr)
            sys.exit(1)

    wrapped.__name__ = task.__name__
    wrapped.__doc__ = task.__doc__
    return wrapped


@user_errors_reported
def run_job(cfg: DictConfig) -> dict[str, Any] | None:
    from lora_ablate.plan.resolve import resolve_run

    run_cfg: RunConfig = OmegaConf.to_object(cfg)
    resolved = resolve_run(run_cfg)
    if run_cfg.dry_run:
        print(json.dumps(resolved.plan.to_dict(), indent=2))
        return None
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from lora_ablate.run.runner import JobSlot, train  # training stack: not needed for dry runs
    from lora_ablate.run.workers import sweep_job

    hydra_cfg = HydraConfig.get()
    in_sweep = hydra_cfg.mode == RunMode.MULTIRUN
    job = JobSlot(index=(hydra_cfg.job.get("num") or 0) if in_sweep else None, parallel_jobs=_parallel_jobs(hydra_cfg))
    with sweep_job():  # in a sweep's worker process: stops with its parent
        record = train(run_cfg, run_dir=Path(hydra_cfg.runtime.output_dir),
                       overrides=list(hydra_cfg.overrides.task), job=job, resolved=resolved)
    if record.status != Status.completed:  # a sweep goes on; a single run exits non-zero
        message = f"run {record.run_id} ended {record.status}: {record.error.message if record.error else ''}"
        if not in_sweep:
            print(f"lora-ablate: {message} (record: {hydra_cfg.runtime.output_dir})", file=sys.stderr)
            sys.exit(1)
        log.error(message)
    return record.metrics


def _parallel_jobs(hydra_cfg: DictConfig) -> int:
    """Jobs that share this machine at once: joblib's n_jobs (-1: all cores); else 1."""
    from hydra.types import RunMode

    n_jobs = hydra_cfg.launcher.get("n_jobs")
    if hydra_cfg.mode != RunMode.MULTIRUN or not isinstance(n_jobs, int):
        return 1
    return (os.cpu_count() or 1) if n_jobs < 0 else max(1, n_jobs)


def main() -> None:
    from lora_ablate.app.overrides import check_overrides, normalise_sweep_selection, read_command_line
    from lora_ablate.app.preflight import check_single_run

    register_configs()
    sys.argv = [sys.argv[0], *normalise_sweep_selection(sys.argv[1:])]  # Hydra reads sys.argv
    if "--version" in sys.argv[1:]:  # Hydra's flag would print Hydra's version
        print(f"lora-ablate {__version__}")
        return
    try:
        command = read_command_line(sys.argv[1:])
        check_overrides(command)
        checked = check_single_run(command)  # before Hydra makes the run's folder
    except ConfigError as err:
        exit_with(err)
    if checked is not None and checked.config.dry_run:
        print(json.dumps(checked.resolved.plan.to_dict(), indent=2))
        return
    app = hydra.main(version_base="1.3", config_path=str(resource_dir("conf")), config_name="config")(run_job)
    from lora_ablate.run.interrupts import Interrupted

    try:
        app()
    except (KeyboardInterrupt, Interrupted) as err:
        if full_error():
            raise
        print(f"lora-ablate: {stopped_message(err)}", file=sys.stderr)
        exit_now(128 + getattr(err, "signum", 2))


def exit_now(code: int) -> None:
    """Exit without the interpreter's teardown: after a stop every record is already on disk
    (written atomically), and collecting a sweep's large heap at exit took 10-50 s on a busy
    machine, time in which a stopped sweep still looked alive."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def stopped_message(err: BaseException) -> str:
    """One line: what stopped the command, what was recorded, and how to resume."""
    from lora_ablate.run.workers import SweepStopped

    what = f"stopped by {signal_name(getattr(err, 'signum', 2))}"
    resume = "Run the same command again to finish (completed runs are skipped)."
    if isinstance(err, SweepStopped):
        runs = len(err.recorded)
        return (f"{what}; {runs} run{'' if runs == 1 else 's'} in flight recorded as interrupted "
                f"in {err.sweep_dir}. {resume}")
    return f"{what}; the run in flight is recorded as interrupted. {resume}"


def signal_name(signum: int) -> str:
    import signal

    return "Ctrl-C (SIGINT)" if signum == signal.SIGINT else signal.Signals(signum).name


def report_main() -> None:
    from lora_ablate.report.render import main as report_cli

    sys.exit(report_cli())
