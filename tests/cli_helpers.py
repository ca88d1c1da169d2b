"""The one way tests start the command line: the `lora-ablate` (or `lora-ablate-report`)
console script in its own process group, offline, with no wandb; plus killing it and
reading back the run records of a sweep."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from lora_ablate.records import Status

STATUSES = tuple(Status)
# What a run prints once it trains: its log line, and (one run at a time) its progress bar.
TRAINING_LOG = re.compile(r": training \d+ steps")
PROGRESS_BAR = re.compile(r"\| *\d+/\d+ \[")


def trained(text: str) -> bool:
    """Whether output shows a run training (its log line or its progress bar)."""
    return bool(TRAINING_LOG.search(text) or PROGRESS_BAR.search(text))


def cli_env(**extra: str) -> dict[str, str]:
    """The caller's environment (LORA_ABLATE_CACHE included, if set), offline, no wandb,
    no HYDRA_FULL_ERROR unless asked for."""
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env.update(WANDB_MODE="disabled", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def console_script(name: str) -> list[str]:
    """The installed console script next to this interpreter (the venv's bin/)."""
    for candidate in (Path(sys.executable).with_name(name), shutil.which(name)):
        if candidate and Path(candidate).exists():
            return [str(candidate)]
    entry = {"lora-ablate": "main", "lora-ablate-report": "report_main"}[name]
    return [sys.executable, "-c", f"import sys; from lora_ablate.app.cli import {entry}; sys.exit({entry}())"]


def start(args: list[str], cwd: Path, script: str = "lora-ablate", *, stdout: Any = subprocess.PIPE,
          stderr: Any = subprocess.PIPE, **env: str) -> subprocess.Popen:
    """Start the console script in its own process group (so a test can signal all of it),
    interruptible as from a terminal. stdout/stderr: pipes, or open files (a long command
    that writes a lot would stall on a full pipe nobody reads)."""
    Path(cwd).mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [*console_script(script), *args],
        cwd=cwd,
        env=cli_env(**env),
        stdout=stdout,
        stderr=stderr,
        text=True,
        start_new_session=True,
        preexec_fn=_default_ctrl_c,
    )


def _default_ctrl_c() -> None:
    """Run in the child before exec: SIGINT back to its default. A background job of a
    non-interactive shell (`bash .ci/run &`) starts with SIGINT ignored and its children
    inherit that, so Python never installs its KeyboardInterrupt handler and a Ctrl-C test
    would send a signal nobody hears."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@dataclass
class Done:
    args: list[str]
    returncode: int
    stdout: str
    stderr: str

    def explain(self) -> str:
        return f"lora-ablate {' '.join(self.args)} -> {self.returncode}\n--- stderr (tail) ---\n{self.stderr[-4000:]}"

    def plan(self) -> dict:
        """The plan a dry run printed on stdout."""
        assert self.returncode == 0, self.explain()
        return json.loads(self.stdout)


def run_cli(args: list[str], cwd: Path, script: str = "lora-ablate", timeout: float = 900, **env: str) -> Done:
    return finish(start(args, cwd, script, **env), args, timeout)


def finish(proc: subprocess.Popen, args: list[str], timeout: float = 900) -> Done:
    """Wait for a command started with `start` (pipes) and collect what it printed."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        out, err = proc.communicate()
        pytest.fail(f"lora-ablate {' '.join(args)} did not finish in {timeout} s:\n{err[-4000:]}")
    return Done(args, proc.returncode, out, err)


def kill_group(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def records(sweep_dir: Path) -> dict[str, dict]:
    """Every result.json below sweep_dir (report/ excluded), by run folder relative to
    sweep_dir; each must be a whole JSON record (they are written atomically)."""
    out = {}
    for path in sorted(sweep_dir.rglob("result.json")):
        rel = str(path.parent.relative_to(sweep_dir))
        if rel.split(os.sep)[0] == "report":
            continue
        text = path.read_text()
        try:
            record = json.loads(text)
        except json.JSONDecodeError as err:
            raise AssertionError(f"{path} is not whole JSON ({err}): {text[:200]!r}") from None
        assert record.get("status") in STATUSES, f"{path}: status {record.get('status')!r}"
        out[rel] = record
    return out


def call_in_process(monkeypatch, capsys, args: list[str]) -> tuple[int, str, str]:
    """`lora-ablate ARGS` in this process: (exit status, stdout, stderr)."""
    from lora_ablate.app import cli

    monkeypatch.setattr(sys, "argv", ["lora-ablate", *args])
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    try:
        cli.main()
        status = 0
    except SystemExit as done:
        status = done.code if isinstance(done.code, int) else 1
    out, err = capsys.readouterr()
    return status, out, err
