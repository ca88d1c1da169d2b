"""What conf/config.yaml relies on in Hydra's config store and resolvers: the schema,
the project's sweeper, the sweep files as group `sweep`, and the folder-name resolvers."""

from datetime import datetime
from pathlib import Path
from typing import Optional

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from lora_ablate.config.schema import RunConfig
from lora_ablate.identity import run_dirname, safe_part


def resource_dir(name: str) -> Path:
    """conf/ and sweeps/ sit at the repo root in a checkout and inside the package in a wheel."""
    package = Path(__file__).resolve().parents[1]
    packaged = package / name
    return packaged if packaged.is_dir() else package.parents[1] / name


def sweep_dirname(sweep_name: Optional[str]) -> str:
    """A sweep's folder under outputs/sweeps/: its name, or for an ad-hoc `-m` sweep
    adhoc/<time it started> (so two ad-hoc sweeps never share a folder)."""
    if not sweep_name:
        return f"adhoc/{datetime.now():%Y-%m-%d_%H-%M-%S}"
    # Cleaned like run folder names: '../x' or '/etc' stays a folder under outputs/sweeps/.
    return safe_part(str(sweep_name)).lstrip(".") or "sweep"


def register_configs() -> None:
    """Put in Hydra's config store what conf/config.yaml relies on: the schema, our
    sweeper, and each sweeps/NAME.yaml as option NAME of group `sweep` (`sweep=NAME`)."""
    # Cached per config like Hydra's ${now:}; the sweeper also pins the result once.
    OmegaConf.register_new_resolver("lora_ablate_sweep_dir", sweep_dirname, replace=True, use_cache=True)
    # A sweep cell's folder: its identifying overrides made safe (see identity.run_dirname).
    OmegaConf.register_new_resolver(
        "lora_ablate_run_dir", lambda overrides: run_dirname([str(o) for o in overrides]), replace=True
    )
    store = ConfigStore.instance()
    store.store(name="lora_ablate_schema", node=RunConfig)
    store.store(
        group="hydra/sweeper",
        name="lora_ablate",
        node={"_target_": "hydra_plugins.lora_ablate_sweeper.ValidatingSweeper", "max_batch_size": None, "params": None},
    )
    for path in sorted(resource_dir("sweeps").glob("*.yaml")):
        store.store(group="sweep", name=path.stem, node=OmegaConf.load(path), package="_global_")
