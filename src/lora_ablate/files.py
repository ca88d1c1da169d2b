"""The one way this package writes a file that others read: write-then-rename, with the
mode a plain open() would have given (so collaborators on a shared cache or sweep folder
can read it), never a half-written file under the final name."""

import errno
import os
import tempfile
from pathlib import Path

DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def shared_file_mode() -> int:
    """0o666 less the process umask: the mode a plain open() would have given."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def shared_dir_mode() -> int:
    """0o777 less the process umask: the mode a plain mkdir() would have given."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o777 & ~umask


def write_atomic(path: Path, data: bytes | str, *, fsync: bool = True) -> Path:
    """Write `data` to `path` by a temporary file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data.encode() if isinstance(data, str) else data)
            handle.flush()
            if fsync:
                os.fsync(handle.fileno())
        os.chmod(tmp, shared_file_mode())  # mkstemp makes it private
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def is_disk_full(err: BaseException | None) -> bool:
    """An OSError for a full disk or an exhausted quota."""
    return isinstance(err, OSError) and err.errno in DISK_FULL


def disk_full_message(err: OSError, folder: Path) -> str:
    """One paragraph for a full disk: what could not be written, what was kept, what to do."""
    what = f" writing {err.filename}" if err.filename else ""
    return (f"the disk is full ({err.strerror or 'no space left on device'}{what}). Nothing is left "
            f"half-written: every record is written whole or not at all. Free some space on the disk "
            f"that holds {folder} (or point hydra.sweep.dir / hydra.run.dir elsewhere), then run the "
            "same command again; completed runs are skipped.")
