"""Content digests and the stat stamp that lets a verified file skip re-hashing."""

import hashlib
import os
from pathlib import Path

Stamp = list[int]  # [size, mtime_ns, inode, ctime_ns]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def stamp(path: Path) -> Stamp:
    """What changes when a file is rewritten or replaced (ctime cannot be set back), read
    without following a link."""
    return stamp_of(path.lstat())


def stamp_of(st: os.stat_result) -> Stamp:
    return [st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns]
