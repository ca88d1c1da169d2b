"""Stopping a run cleanly: Ctrl-C and SIGTERM (a `kill`, a SLURM time limit, a sweep being
stopped) end training with an exception, so the runner records the run as interrupted;
and a per-run lock, so two processes never train the same cell into the same folder at once."""

import errno
import fcntl
import os
import signal
import socket
import stat
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from lora_ablate.errors import ConfigError

LOCK_NAME = ".lock"


class Interrupted(BaseException):
    """SIGTERM arrived; a BaseException so that no `except Exception` swallows it."""

    def __init__(self, signum: int):
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


@contextmanager
def stop_signals() -> Iterator[Callable[[], None]]:
    """While a run trains and writes its record: Ctrl-C raises KeyboardInterrupt and SIGTERM
    (a `kill`, a SLURM time limit, a sweep's parent stopping its workers) raises
    Interrupted, once. Later signals are noted and wait, so a second Ctrl-C or a SIGTERM
    sent to the whole process group cannot cut the record short.

    The yielded check raises the first signal again: Python prints and drops an exception
    raised inside a finaliser (a __del__, a weakref callback), which would leave training
    running, so the loop calls it every step. A signal that was dropped, or noted while the
    record was written, is raised on leaving unless it already left the block.

    Handlers are installed only in the main thread and only where the signal has Python's
    default handling: a worker that ignores SIGINT keeps doing so, and under submitit, whose
    job process bypasses SIGTERM and handles preemption with SIGUSR2 (then SystemExit),
    SIGTERM is left alone."""
    if threading.current_thread() is not threading.main_thread():
        yield lambda: None
        return
    default = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: signal.SIG_DFL}
    previous = {signum: signal.getsignal(signum) for signum in default}
    owned = [signum for signum, handler in previous.items() if handler is default[signum]]
    received: list[int] = []
    delivered: list[bool] = []  # the check raised it

    def stop(signum: int) -> BaseException:
        return KeyboardInterrupt() if signum == signal.SIGINT else Interrupted(signum)

    def handler(signum, frame):
        received.append(signum)
        if len(received) == 1:
            raise stop(signum)

    def check() -> None:
        if received:
            delivered.append(True)
            raise stop(received[0])

    for signum in owned:
        signal.signal(signum, handler)
    failed = False
    try:
        yield check
    except BaseException:
        failed = True
        raise
    finally:
        for signum in owned:
            signal.signal(signum, previous[signum])
        if received and not failed and not delivered:
            raise stop(received[0])


class RunLocked(ConfigError):
    """Another process holds the cell's lock."""


class RunLock:
    """An exclusive, non-blocking lock on run_dir/.lock (released by the OS if the process
    dies), naming its holder so a second process can say who trains the cell. The lock file
    must be a plain file of its own: a symbolic link, a hard link or anything else under
    that name is refused, never opened for writing, so nobody's other file is truncated."""

    def __init__(self, run_dir: Path, run_id: str):
        self.path = Path(run_dir) / LOCK_NAME
        self.run_id = run_id
        self._fd: int | None = None

    def __enter__(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = self._open()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise RunLocked(
                f"run {self.run_id} is being trained right now by {holder} in {self.path.parent}; "
                "this process leaves it alone. Wait for it to finish (rerun the same command then: "
                "completed runs are skipped), or stop that process first."
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode())
        self._fd = fd
        return self

    def _open(self) -> int:
        # O_NONBLOCK: a FIFO under the lock's name must not hang the open.
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            fd = os.open(self.path, flags, 0o666)
        except OSError as err:
            problem = {errno.ELOOP: "is a symbolic link", errno.EISDIR: "is a folder"}.get(err.errno)
            if problem is None:
                raise
            raise ConfigError(self._not_ours(problem)) from None
        info = os.fstat(fd)
        problem = ("is not a regular file" if not stat.S_ISREG(info.st_mode)
                   else "has other hard links" if info.st_nlink != 1 else None)
        if problem:
            os.close(fd)
            raise ConfigError(self._not_ours(problem))
        return fd

    def _not_ours(self, problem: str) -> str:
        return (f"{self.path} {problem}; lora-ablate writes its run locks only as plain files of "
                "their own and leaves this one (and whatever it points to) untouched. Remove it, "
                f"or give the sweep another folder (hydra.sweep.dir=...), then run {self.run_id} again.")

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
