"""Command-line overrides checked against the schema and the config groups before Hydra
composes them, so a misspelled key or option gets one paragraph that names it and what
is valid (with a close match), instead of Hydra's composition trace."""

import dataclasses
import difflib
import typing
from pathlib import Path

from lora_ablate.config.schema import RunConfig, resource_dir
from lora_ablate.errors import ConfigError

GROUPS = ("model", "task", "targets", "budget", "train", "logger", "sweep")
FLAGS_WITH_VALUE = {"--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn",
                    "--config-dir", "-cd", "--experimental-rerun", "--info", "-i"}


def command_line_overrides(args: list[str]) -> list[str] | None:
    """The overrides among Hydra's arguments; None when a custom config path or name is
    used (then the groups are not ours to check)."""
    overrides, skip = [], False
    for arg in args:
        if skip:
            skip = False
            continue
        if arg in FLAGS_WITH_VALUE:
            if arg in {"--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd"}:
                return None
            skip = arg not in {"--info", "-i"}
            continue
        if not arg.startswith("-"):
            overrides.append(arg)
    return overrides


def group_options(group: str) -> list[str]:
    folder = resource_dir("sweeps") if group == "sweep" else resource_dir("conf") / group
    return sorted(p.stem for p in Path(folder).glob("*.yaml"))


def check_overrides(overrides: list[str]) -> None:
    problems = [p for text in overrides if (p := _problem(text))]
    if problems:
        raise ConfigError(" ".join(problems))


def _problem(text: str) -> str | None:
    key, has_value, value = text.partition("=")
    key = key.lstrip("+~")
    if not has_value or key.startswith("hydra") or key.startswith("hydra/"):
        return None
    if key == "model.package":  # checked before pip, and before Hydra's grammar sees '=='
        from lora_ablate.data.assets import package_override_problem

        return package_override_problem(value)
    if key in GROUPS:
        options = group_options(key)
        bad = [v for v in _choices(value) if v not in options and v != "null"]
        if bad:
            return f"{key}={bad[0]} is not an option of group '{key}'{_close(bad[0], options)}; valid options are {', '.join(options)}."
        return None
    return _key_problem(key.split("."))


def _key_problem(parts: list[str]) -> str | None:
    schema: typing.Any = RunConfig
    for depth, part in enumerate(parts):
        if not dataclasses.is_dataclass(schema):
            return None  # below a free-form mapping (model.config, model.matrix_map)
        fields = {f.name: f for f in dataclasses.fields(schema)}
        if part not in fields:
            where = ".".join(parts[:depth]) or "the top level"
            return (
                f"'{'.'.join(parts)}' is not a config key: {where} has no '{part}'"
                f"{_close(part, list(fields))}; valid keys there are {', '.join(fields)}."
            )
        schema = typing.get_type_hints(schema).get(part)
    return None


def _choices(value: str) -> list[str]:
    value = value.strip()
    if value.startswith("choice(") and value.endswith(")"):
        value = value[len("choice(") : -1]
    return [v.strip() for v in value.split(",") if v.strip()]


def _close(word: str, options: list[str]) -> str:
    match = difflib.get_close_matches(word, options, n=1)
    return f" (did you mean '{match[0]}'?)" if match else ""
