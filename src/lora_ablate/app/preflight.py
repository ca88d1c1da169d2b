"""Every mistake found before training, and before Hydra makes a folder: a run is checked
as it would check itself before its first step, short of loading weights (the schema, the
plan on a weightless model, the task's data, the device). The command line's single run
is composed here with Hydra's compose API; a sweep's cells get the same check in the
sweeper, every cell before cell #0."""

from dataclasses import dataclass
from typing import TYPE_CHECKING

from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from lora_ablate.app.overrides import CommandLine, composition_problem, parse
from lora_ablate.app.store import resource_dir
from lora_ablate.config.schema import RunConfig
from lora_ablate.errors import ConfigError

if TYPE_CHECKING:
    from lora_ablate.plan.resolve import ResolvedRun


@dataclass
class CheckedRun:
    config: RunConfig
    resolved: "ResolvedRun"


def check_run(cfg: DictConfig, data_checked: dict[str, str | None] | None = None) -> CheckedRun:
    """Raise ConfigError for anything the run would reject before its first step.
    `data_checked` remembers each task config's data check, so a sweep reads each task once."""
    from lora_ablate.data.tasks import check_task_data
    from lora_ablate.plan.resolve import resolve_run
    from lora_ablate.run.devices import pick_device

    try:
        run_cfg: RunConfig = OmegaConf.to_object(cfg)  # the schema's checks (__post_init__)
    except OmegaConfBaseException as err:  # e.g. a mandatory value (???) left unset
        raise ConfigError(" ".join(str(err).split())) from None
    resolved = resolve_run(run_cfg)
    pick_device(run_cfg.train.device)
    memo = {} if data_checked is None else data_checked
    task_key = OmegaConf.to_yaml(cfg.task)
    if task_key not in memo:
        try:
            check_task_data(run_cfg.task)  # reads, checks and splits the data
            memo[task_key] = None
        except ConfigError as err:
            memo[task_key] = str(err)
    if memo[task_key]:
        raise ConfigError(memo[task_key])
    if resolved.task_format == "sft":  # the chat template, and completions that fit, need the tokenizer
        from lora_ablate.data.encoded import sft_splits
        from lora_ablate.model.loading import load_tokenizer

        sft_splits(run_cfg.task, load_tokenizer(run_cfg.model, resolved.source))
    return CheckedRun(run_cfg, resolved)


def check_single_run(command: CommandLine) -> CheckedRun | None:
    """The checked run a command line asks for; None when it asks for a sweep (the sweeper
    checks every cell), only prints (--cfg, --info, -sc, --help), or names a config folder
    or file of its own (which Hydra composes; the run checks itself)."""
    if not command.runs_jobs or command.custom_config or command.config_dirs:
        return None
    parsed = parse(command.overrides)
    sweeps = [o.input_line for o in parsed if o.is_sweep_override()]
    cfg = compose_config([o.input_line for o in parsed if not o.is_sweep_override()])
    from hydra.types import RunMode

    if command.multirun or cfg.hydra.mode == RunMode.MULTIRUN:
        return None
    if sweeps:
        raise ConfigError(
            f"{' '.join(sweeps)} gives several values, which makes a sweep, but without -m this command "
            f"trains one run. To train every combination add -m (lora-ablate -m {' '.join(command.overrides)}) "
            "or name a sweep file (sweep=NAME, from sweeps/). For one run whose value is a list write "
            "key=[a,b]; for a value that contains a comma, quote it: key='a,b'."
        )
    with open_dict(cfg):
        del cfg["hydra"]  # as Hydra does before handing a job its config
    return check_run(cfg)


def compose_config(overrides: list[str]) -> DictConfig:
    """conf/config.yaml with the overrides, hydra node included, as `@hydra.main` composes it
    (Hydra's public compose API; the config store is already filled by register_configs)."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException

    try:
        with initialize_config_dir(config_dir=str(resource_dir("conf")), version_base="1.3", job_name="lora-ablate"):
            return compose(config_name="config", overrides=overrides, return_hydra_config=True)
    except (HydraException, OmegaConfBaseException) as err:  # e.g. a bad value in a config file
        raise ConfigError(composition_problem(err)) from None
