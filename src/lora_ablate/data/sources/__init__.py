"""Task sources, one module each, behind one interface (base.Source). The registry is
every module of this package that defines `SOURCE`, keyed by its `kind`: a new source is
one new module (and its value in config.schema.TaskSource)."""

import importlib
import pkgutil

from lora_ablate.config.schema import TaskConfig, TaskSource
from lora_ablate.data.sources.base import RawExamples, Source
from lora_ablate.errors import ConfigError


def _discover() -> dict[TaskSource, Source]:
    found: dict[TaskSource, Source] = {}
    for module in pkgutil.iter_modules(__path__):
        source = getattr(importlib.import_module(f"{__name__}.{module.name}"), "SOURCE", None)
        if source is None:
            continue  # a helper module
        if source.kind in found:
            raise RuntimeError(f"two task sources for {source.kind!r}: {module.name} and another module; this is a bug")
        found[source.kind] = source
    return found


SOURCES: dict[TaskSource, Source] = _discover()


def source_for(cfg: TaskConfig) -> Source:
    """The source that reads `cfg.source`; a ConfigError listing the valid ones otherwise."""
    source = SOURCES.get(cfg.source) if isinstance(cfg.source, str) else None
    if source is None:
        valid = ", ".join(kind.value for kind in TaskSource if kind in SOURCES)
        raise ConfigError(f"task.source={cfg.source!r} is not a known source; valid sources are {valid}.")
    return source


__all__ = ["SOURCES", "RawExamples", "Source", "source_for"]
