"""Stopping a run cleanly: SIGTERM (a `kill`, a SLURM time limit, a preemption) is raised
like Ctrl-C so the runner records the run as interrupted; and a per-run lock, so two
processes never train the same cell into the same folder at once."""

import fcntl
import os
import signal
import socket
import threading
from collections.abc import Iterator
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
def terminate_as_interrupt() -> Iterator[None]:
    """While inside, SIGTERM raises Interrupted in the main thread. Only where SIGTERM has
    its default action: under submitit, whose job process bypasses SIGTERM and handles
    preemption and time-outs with SIGUSR2 (requeue, then SystemExit), nothing changes, and
    that SystemExit is what the runner records as interrupted."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    if previous is not signal.SIG_DFL:
        yield
        return

    def raise_interrupted(signum, frame):
        raise Interrupted(signum)

    signal.signal(signal.SIGTERM, raise_interrupted)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class RunLocked(ConfigError):
    """Another process holds the cell's lock."""


class RunLock:
    """An exclusive, non-blocking lock on run_dir/.lock (released by the OS if the process
    dies), naming its holder so a second process can say who trains the cell."""

    def __init__(self, run_dir: Path, run_id: str):
        self.path = Path(run_dir) / LOCK_NAME
        self.run_id = run_id
        self._fd: int | None = None

    def __enter__(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
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

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
