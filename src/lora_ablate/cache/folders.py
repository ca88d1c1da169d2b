"""Content-keyed folders: cache_root()/<kind>/<key>/, made once under a lock by filling a
scratch folder that is renamed into place whole, then checked against its manifest every
time it is used. A folder that no longer matches (an edited or added file) is made again
from its source, with a warning naming it."""

import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from lora_ablate.cache.locks import locked
from lora_ablate.cache.manifest import DIGEST_FILE, differences, folder_problem, write_manifest
from lora_ablate.cache.root import PARTIAL_PREFIX, cache_root, remove_partials, write_plain_file
from lora_ablate.errors import ConfigError
from lora_ablate.files import shared_dir_mode

log = logging.getLogger(__name__)


def content_keyed_folder(kind: str, key: str, build: Callable[[Path], None]) -> Path:
    """cache_root()/<kind>/<key>, made by `build(scratch folder)` unless a finished folder
    for `key` (its digest file, written last, holds `key`) still holds what its manifest
    records. `key` must name the content `build` makes, e.g. the sha256 of an archive."""
    root = cache_root() / kind
    target = root / key
    if has_digest(target, key) and folder_problem(target) is None:
        return target
    try:
        root.mkdir(parents=True, exist_ok=True)
        with locked(f"{kind}-{key}"):
            # Another process may have made or repaired it while we waited for the lock.
            finished = has_digest(target, key)
            problem = folder_problem(target) if finished else None
            if finished and problem is None:
                return target
            remove_partials(root, key)
            _make(root, key, build, problem)
    except PermissionError as err:
        raise ConfigError(
            f"The cache folder {target} has to be made or checked again, which failed with a permission "
            f"error ({err}); if the cache is not yours to write, set LORA_ABLATE_CACHE to a folder you can "
            "write, or ask its owner to run lora-ablate once."
        ) from err
    return target


def has_digest(folder: Path, key: str) -> bool:
    """True if `folder` is a finished cache folder made for `key`."""
    try:
        return (folder / DIGEST_FILE).read_text().strip() == key
    except OSError:
        return False


def _make(root: Path, key: str, build: Callable[[Path], None], problem: str | None) -> None:
    """Build into a scratch folder and rename it to root/key. `problem`: why the finished
    folder there failed its check; if it holds the same content as the fresh build (a
    folder from before manifests existed), it is kept and given the manifest instead."""
    target = root / key
    scratch = Path(tempfile.mkdtemp(prefix=f"{PARTIAL_PREFIX}{key}-", dir=root))
    try:
        build(scratch)
        fresh = write_manifest(scratch)
        write_plain_file(scratch / DIGEST_FILE, key + "\n")
        scratch.chmod(shared_dir_mode())  # mkdtemp makes it private; the cache may be shared
        if problem is not None and differences(target, fresh) is None:
            write_manifest(target)
            shutil.rmtree(scratch)
            return
        if problem is not None:
            log.warning("the cache folder %s does not hold what it was made with (%s); it was made again", target, problem)
        _replace(target, scratch, root, key)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise


def _replace(target: Path, scratch: Path, root: Path, key: str) -> None:
    """Rename `scratch` to `target`; an old folder there is first renamed into a scratch
    folder (so a crash leaves it to remove_partials) and deleted after. Processes reading
    files of the old folder keep reading them."""
    if not os.path.lexists(target):
        os.rename(scratch, target)  # atomic
        return
    aside = Path(tempfile.mkdtemp(prefix=f"{PARTIAL_PREFIX}{key}-", dir=root))
    os.rename(target, aside / "old")
    os.rename(scratch, target)
    shutil.rmtree(aside, ignore_errors=True)
