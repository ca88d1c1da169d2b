"""Stopping a sweep whose cells run in worker processes (joblib's loky workers under
`hydra/launcher=parallel`, submitit_local's job processes).

Parent side: while the launcher runs, SIGINT and SIGTERM to the sweep's process are passed
on to its workers as SIGTERM; the parent waits until they have written their records and
exited, then stops with `SweepStopped`, which names what was recorded. (Left to joblib, a
Ctrl-C makes it SIGKILL its workers at once, in the middle of writing their records.)

Worker side: a job process of the sweep watches its parent and stops itself (SIGTERM to
itself, so the run in flight is recorded as interrupted) when the parent is gone, even
after a SIGKILL; and a job process whose run was interrupted exits rather than taking the
next cell from the queue.

The parent hands its pid to the workers in the environment (SWEEP_PID_ENV), which every
launcher passes on; a worker acts on it only when that pid is its own parent, so a job on a
cluster node (whose environment came from the login node) is left alone.
"""

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from lora_ablate.run.interrupts import Interrupted

log = logging.getLogger(__name__)

SWEEP_PID_ENV = "LORA_ABLATE_SWEEP_PID"
POLL_SECONDS = 0.5  # how often a worker looks for its parent
GRACE_SECONDS = 120.0  # longest wait for a worker to write its record after a stop


class SweepStopped(Interrupted):
    """A signal stopped a sweep; `recorded` lists the runs recorded as interrupted."""

    def __init__(self, signum: int, recorded: list[str]):
        super().__init__(signum)
        self.recorded = recorded


# ------------------------------------------------------------------ parent side


@contextmanager
def stop_workers_on_signal(recorded: Callable[[float], list[str]]) -> Iterator[None]:
    """While inside (the sweep's main thread): SIGINT or SIGTERM is passed on to every
    worker process, which records its run as interrupted and exits; once they are gone,
    SweepStopped is raised with `recorded(since)` (the runs recorded since the signal)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    own_pid = str(os.getpid())
    inherited = os.environ.get(SWEEP_PID_ENV)

    def stop(signum, frame):
        for held in previous:  # one stop at a time: a second Ctrl-C does not abandon the wait
            signal.signal(held, signal.SIG_IGN)
        since = time.time()
        print(f"lora-ablate: {signal.Signals(signum).name} received; stopping the runs in flight "
              "(each writes its record first) ...", file=sys.stderr, flush=True)
        workers = stop_children()
        left = wait_for_exit(workers, GRACE_SECONDS)
        for pid in left:
            _signal(pid, signal.SIGKILL)
        raise SweepStopped(signum, recorded(since))

    os.environ[SWEEP_PID_ENV] = own_pid  # workers spawned from now on inherit it
    for signum in previous:
        signal.signal(signum, stop)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if inherited is None:
            os.environ.pop(SWEEP_PID_ENV, None)
        else:
            os.environ[SWEEP_PID_ENV] = inherited


def stop_children() -> list[int]:
    """SIGTERM to every child process that heeds it; their pids. A child that ignores
    SIGTERM (loky's resource tracker) exits by itself once its pipe closes."""
    stopped = []
    for pid in child_pids(os.getpid()):
        if not _ignores(pid, signal.SIGTERM) and _signal(pid, signal.SIGTERM):
            stopped.append(pid)
    return stopped


def child_pids(pid: int) -> list[int]:
    """Direct children of `pid` (Linux /proc; elsewhere none are found and the launcher's
    own shutdown is all there is)."""
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            children += [int(c) for c in task.read_text().split()]
        except (OSError, ValueError):
            continue
    return sorted(set(children))


def wait_for_exit(pids: list[int], timeout: float) -> list[int]:
    """Wait until every pid has exited (or is a zombie); those still running at the end."""
    deadline = time.monotonic() + timeout
    running = list(pids)
    while running and time.monotonic() < deadline:
        time.sleep(0.1)
        running = [pid for pid in running if _alive(pid)]
    return running


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _ignores(pid: int, signum: int) -> bool:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("SigIgn:"):
                return bool(int(line.split()[1], 16) >> (signum - 1) & 1)
    except (OSError, ValueError):
        pass
    return False


def _signal(pid: int, signum: int) -> bool:
    try:
        os.kill(pid, signum)
        return True
    except (ProcessLookupError, PermissionError):
        return False


# ------------------------------------------------------------------ worker side


def sweep_parent() -> int | None:
    """The pid of the sweep this process works for, when it is that sweep's child process."""
    try:
        pid = int(os.environ.get(SWEEP_PID_ENV, ""))
    except ValueError:
        return None
    return pid if pid != os.getpid() and os.getppid() == pid else None


@contextmanager
def sweep_job() -> Iterator[None]:
    """Around one job in a sweep's worker process (a no-op elsewhere): stop the job when
    the parent dies, and end the process after an interrupted run, once its record is
    written, so it takes no further cell."""
    parent = sweep_parent()
    if parent is None:
        yield
        return
    done = threading.Event()
    watch = threading.Thread(target=_watch_parent, args=(parent, done), name="sweep-parent-watch", daemon=True)
    watch.start()
    try:
        yield
    except (KeyboardInterrupt, Interrupted) as err:
        log.warning("stopped (%s); this worker exits", err or type(err).__name__)
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(128 + getattr(err, "signum", signal.SIGINT))
    finally:
        done.set()


def _watch_parent(parent: int, done: threading.Event) -> None:
    """When the parent is gone, SIGTERM this process (the run records itself as interrupted,
    or, outside a run, the process just ends); if it is still alive after the grace period,
    end it."""
    while not done.wait(POLL_SECONDS):
        if os.getppid() != parent:
            break
    else:
        return
    log.warning("the sweep's process %d is gone; stopping this run", parent)
    os.kill(os.getpid(), signal.SIGTERM)
    if not done.wait(GRACE_SECONDS):
        os._exit(128 + signal.SIGTERM)
