"""The project's one inter-process lock: filelock's flock primitive on a file under
cache_root()/locks/, released by the kernel if the holder dies, so a killed run never
blocks the next one.

The lock file is opened here rather than by `filelock.FileLock`, which opens it for
writing: read-only is enough for flock and works on a lock file another user of a shared
cache created, and O_NOFOLLOW means a planted symlink is refused, never followed."""

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import lock_descriptor, unlock_descriptor

from lora_ablate.cache.root import cache_root
from lora_ablate.errors import ConfigError

POLL_S = 0.05  # how often a waiting process retries


@contextmanager
def locked(name: str) -> Iterator[None]:
    """Hold the exclusive lock cache_root()/locks/<name>.lock for the block."""
    locks = cache_root() / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    fd = _open_lock_file(locks / f"{name}.lock")
    try:
        lock_descriptor(fd, blocking=True, poll_interval=POLL_S)
        try:
            yield
        finally:
            unlock_descriptor(fd)
    finally:
        os.close(fd)  # closing would release it too


def _open_lock_file(path: Path) -> int:
    try:
        return os.open(path, os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW, 0o666)  # the umask applies
    except OSError as err:
        if err.errno != errno.ELOOP:
            raise
    raise ConfigError(
        f"The cache lock file {path} is a symbolic link; lock files are never followed, so that a link "
        "cannot make the cache touch another file. Delete it (nothing else is affected) and run again."
    )
