"""Stopping a sweep whose cells run in worker processes (joblib's loky workers under
`hydra/launcher=parallel`, submitit_local's job processes).

Parent side: while the launcher runs, SIGINT and SIGTERM to the sweep's process are passed
on as SIGINT to the processes that run its cells (the leaves of its process tree: loky's
workers; submitit_local's job processes below their controllers). SIGINT because every
launcher's job process heeds it (submitit's bypasses SIGTERM), and the leaves because a
submitit controller that got it would SIGKILL its job a second later, in the middle of
writing the record. The parent waits until they have written their records and exited,
then stops with `SweepStopped`, which names what was recorded. (Left to joblib, a Ctrl-C
makes it SIGKILL its workers at once; and once the first stopped worker has exited, loky takes
its pool for broken and SIGKILLs the others, so that kill is held back until they have exited
on their own: see `loky_waits_for`.)

Worker side: a job process of the sweep watches the sweep's process and stops itself (a
SIGINT to itself, so the run in flight is recorded as interrupted) once that process is no
longer among its ancestors, even after a SIGKILL; and a direct worker whose run was
interrupted exits rather than take the next cell from the queue.

The parent hands its pid to the workers in the environment (SWEEP_PID_ENV), which every
launcher passes on; a worker acts on it only when that pid is its ancestor, so a job on a
cluster node (whose environment came from the login node) is left alone.
"""

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lora_ablate.run.interrupts import Interrupted

log = logging.getLogger(__name__)

SWEEP_PID_ENV = "LORA_ABLATE_SWEEP_PID"
POLL_SECONDS = 0.5  # how often a worker looks for its parent
GRACE_SECONDS = 120.0  # longest wait for a worker to write its record after a stop


class SweepStopped(Interrupted):
    """A signal stopped a sweep; `recorded` lists the run folders (below `sweep_dir`)
    whose records say interrupted."""

    def __init__(self, signum: int, sweep_dir: Path, recorded: list[str]):
        super().__init__(signum)
        self.sweep_dir = sweep_dir
        self.recorded = recorded


# ------------------------------------------------------------------ parent side


@contextmanager
def stop_workers_on_signal(sweep_dir: Path) -> Iterator[None]:
    """While inside (the sweep's main thread): SIGINT or SIGTERM is passed on to every
    worker process, which records its run as interrupted and exits; once they are gone,
    SweepStopped is raised naming the runs recorded as interrupted since the signal."""
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
        workers: list[int] = []
        with loky_waits_for(workers):
            stop_cell_processes(workers)
            left = wait_for_exit(workers, GRACE_SECONDS)
            for pid in left:
                _signal(pid, signal.SIGKILL)
        raise SweepStopped(signum, sweep_dir, interrupted_since(sweep_dir, since))

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


def stop_cell_processes(stopped: list[int] | None = None) -> list[int]:
    """SIGINT to every process below this one that runs a cell: the leaves of the process
    tree that heed SIGINT (loky's and Python's resource trackers ignore it, and exit once
    their pipe closes). Their pids, added to `stopped` before each signal is sent (so a
    watcher holding that list knows of a worker before it can exit)."""
    stopped = [] if stopped is None else stopped
    for pid in descendants(os.getpid()):
        if not child_pids(pid) and not _ignores(pid, signal.SIGINT):
            stopped.append(pid)
            if not _signal(pid, signal.SIGINT):
                stopped.remove(pid)
    return stopped


LOKY_EXECUTOR = "joblib.externals.loky.process_executor"


@contextmanager
def loky_waits_for(pids: list[int]) -> Iterator[None]:
    """While inside: joblib's loky executor, which SIGKILLs all its workers as soon as one
    of them exits unasked (it takes the pool for broken), first waits for the processes in
    `pids` (read when it comes to kill) to exit on their own, GRACE_SECONDS at most. A
    stopped worker exits right after writing its record, and a busy machine can leave
    another still writing its own: without this, that record is lost. Nothing happens
    where loky is not loaded (other launchers)."""
    executor = sys.modules.get(LOKY_EXECUTOR)
    manager = getattr(executor, "_ExecutorManagerThread", None)
    original = getattr(manager, "kill_workers", None)
    if original is None:
        yield
        return

    def kill_workers(self, *args, **kwargs):
        wait_for_exit(list(pids), GRACE_SECONDS)
        return original(self, *args, **kwargs)

    manager.kill_workers = kill_workers
    try:
        yield
    finally:
        manager.kill_workers = original


def descendants(pid: int) -> list[int]:
    found, todo = [], child_pids(pid)
    while todo:
        child = todo.pop()
        found.append(child)
        todo += child_pids(child)
    return found


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


def interrupted_since(sweep_dir: Path, since: float) -> list[str]:
    """Run folders (relative to sweep_dir) whose records say interrupted, written since `since`."""
    from lora_ablate.records import RECORD_NAME, Status, read_record

    found = []
    for path in sorted(Path(sweep_dir).rglob(RECORD_NAME)):
        try:
            if path.stat().st_mtime < since - 1:
                continue
        except OSError:
            continue
        record = read_record(path).record
        if record is not None and record.status == Status.interrupted:
            found.append(str(path.parent.relative_to(sweep_dir)))
    return found


# ------------------------------------------------------------------ worker side


def sweep_ancestor() -> int | None:
    """The pid of the sweep this process runs a cell for, when that process is its ancestor."""
    try:
        pid = int(os.environ.get(SWEEP_PID_ENV, ""))
    except ValueError:
        return None
    return pid if pid != os.getpid() and pid in ancestors() else None


def ancestors() -> list[int]:
    """Parent, grandparent, ... up to init (Linux /proc; elsewhere the parent only)."""
    chain, pid = [], os.getppid()
    while pid > 1 and pid not in chain:
        chain.append(pid)
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            break
    return chain


@contextmanager
def sweep_job() -> Iterator[None]:
    """Around one job in a sweep's worker process (a no-op elsewhere): stop the job when
    the sweep's process is gone, and end a direct worker (loky's) after an interrupted run,
    once its record is written, so that it takes no further cell."""
    sweep = sweep_ancestor()
    if sweep is None:
        yield
        return
    done = threading.Event()
    watch = threading.Thread(target=_watch_sweep, args=(sweep, done), name="sweep-watch", daemon=True)
    watch.start()
    try:
        yield
    except (KeyboardInterrupt, Interrupted) as err:
        if os.getppid() == sweep or sweep not in ancestors():
            log.warning("stopped (%s); this worker exits", str(err) or type(err).__name__)
            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(128 + getattr(err, "signum", signal.SIGINT))
        raise
    finally:
        done.set()


def _watch_sweep(sweep: int, done: threading.Event) -> None:
    """Once the sweep's process is no longer an ancestor, SIGINT this process (the run
    records itself as interrupted); if it is still alive after the grace period, end it."""
    while not done.wait(POLL_SECONDS):
        if sweep not in ancestors():
            break
    else:
        return
    log.warning("the sweep's process %d is gone; stopping this run", sweep)
    os.kill(os.getpid(), signal.SIGINT)
    if not done.wait(GRACE_SECONDS):
        os._exit(128 + signal.SIGINT)
