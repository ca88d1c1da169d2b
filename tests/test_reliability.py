"""Reliability of the command line: bad input is rejected before anything trains (one run
and every cell of a sweep), and faults lose nothing but the run they hit: SIGKILL at any
moment, Ctrl-C, a corrupt or half-written result.json, a diverged run.

Everything here drives the real command line: each test starts the `lora-ablate` console
script (the validation cases, two dozen invocations that each fail within a second or two
after the imports, two at a time). The last section tests the file handling (locks, the
sweep folder, records the report reads) on the functions themselves.

Subprocesses get WANDB_MODE=disabled and HF_HUB_OFFLINE=1, and LORA_ABLATE_CACHE from the
caller (unset: the package default). The data is a small CSV written per module (task=local).
"""

import csv
import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path

import pytest

from cli_helpers import PROGRESS_BAR, Done, kill_group, records, run_cli, start, trained

# ---------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------


def stamps(sweep_dir: Path) -> dict[str, tuple[int, str]]:
    """(mtime_ns, sha256) of every result.json, by run folder."""
    out = {}
    for path in sweep_dir.rglob("result.json"):
        rel = str(path.parent.relative_to(sweep_dir))
        if rel.split(os.sep)[0] != "report":
            out[rel] = (path.stat().st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest())
    return out


def write_csv(path: Path, rows: list[tuple[str, str]], header: tuple[str, str] = ("sentence", "y")) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def learnable_rows(n: int = 240) -> list[tuple[str, str]]:
    """Two classes told apart by their words, so that a few steps change the metrics."""
    rng = random.Random(7)
    good = ["good", "great", "lovely", "fine", "superb", "charming", "moving", "brilliant"]
    bad = ["bad", "awful", "boring", "poor", "dull", "tedious", "clumsy", "weak"]
    filler = ["the", "film", "plot", "cast", "story", "music", "ending", "scenes", "acting", "script"]
    rows = []
    for i in range(n):
        label = i % 2
        words = rng.choices(good if label else bad, k=3) + rng.choices(filler, k=4)
        rng.shuffle(words)
        rows.append((f"{' '.join(words)} #{i}", "pos" if label else "neg"))
    return rows


# ---------------------------------------------------------------------------------------
# Fixtures: a folder with the data files; every subprocess runs there (relative task.path
# keeps run-folder names flat)
# ---------------------------------------------------------------------------------------

LOCAL = ["task=local", "task.text_column=sentence", "task.label_column=y"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_csv(root / "good.csv", learnable_rows())
    (root / "malformed.csv").write_text('sentence,y\ngood film,pos\n"an unclosed quote,neg\nmore,neg,extra\n')
    write_csv(root / "empty.csv", [])  # a header and no rows
    (root / "blank.csv").write_text("")  # not even a header
    # 2 of 200 examples positive: held-out splits take them, the training split has one class
    write_csv(root / "oneclass.csv", [(f"text a {i}", "neg") for i in range(198)] + [("text b 0", "pos"), ("text b 1", "pos")])
    # a model folder with only a config.json (enough to plan; validation loads no weights)
    from transformers import AutoConfig

    AutoConfig.for_model("bert", vocab_size=260, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=256).save_pretrained(root / "bert_config")
    return root


# ---------------------------------------------------------------------------------------
# 1. Validation before training
# ---------------------------------------------------------------------------------------

# Runs on the local data; every case below changes one thing. One torch thread per run:
# on a small shared machine two threads per tiny run cost more than they give.
BASE = ["model=tiny_bert", *LOCAL, "task.path=good.csv", "task.train_size=32", "task.val_size=32",
        "task.test_size=32", "train.max_steps=2", "train.batch_size=4", "train.threads=1"]


@dataclass(frozen=True)
class Bad:
    """A bad override and what its message must contain (regexes, case-insensitive):
    the bad value, and what is valid."""

    override: str
    needles: tuple[str, ...]
    extra: tuple[str, ...] = ()  # other overrides the case needs (e.g. budget=params)


BAD = {
    "misspelled_key": Bad("train.max_stepz=3", (r"max_stepz", r"\bmax_steps\b")),
    "unknown_targets_option": Bad("targets=qz", (r"\bqz\b", r"\bqkv_ffn\b")),
    "unknown_model_option": Bad("model=nope", (r"\bnope\b", r"\btiny_bert\b")),
    "unknown_matrix": Bad("targets.matrices=[q,x]", (r"['\"`]x['\"`]", r"\bffn_down\b")),
    "matrix_not_in_architecture": Bad("targets.matrices=[ffn_gate]", (r"ffn_gate", r"\bffn_up\b"), ("model=tiny_gpt2",)),
    "infeasible_budget": Bad("budget.params=10", (r"\b10\b", r"at least|minimum"), ("budget=params",)),
    "zero_budget": Bad("budget.params=0", (r"budget\.params", r"positive"), ("budget=params",)),
    "zero_rank": Bad("lora.rank=0", (r"lora\.rank", r"positive"), ("budget=none",)),
    "missing_model_folder": Bad("model.name_or_path=/nope", (r"/nope", r"config\.json|hub id"), ("model=custom",)),
    "unreachable_hub_id": Bad("model.name_or_path=someone/not-a-model", (r"someone/not-a-model", r"hub"), ("model=custom",)),
    "missing_data_file": Bad("task.path=missing.csv", (r"missing\.csv", r"\.csv|\.jsonl")),
    "malformed_data_file": Bad("task.path=malformed.csv", (r"malformed\.csv", r"line \d")),
    "empty_data_file": Bad("task.path=empty.csv", (r"empty\.csv", r"no examples|empty")),
    "blank_data_file": Bad("task.path=blank.csv", (r"blank\.csv", r"no examples|empty|header")),
    "missing_label_column": Bad("task.label_column=nope", (r"\bnope\b", r"\bsentence\b")),
    "single_class_train": Bad("task.path=oneclass.csv", (r"single class|one class", r"label"), ("task.train_size=16",)),
    "zero_steps": Bad("train.max_steps=0", (r"max_steps", r"positive")),
    "zero_batch_size": Bad("train.batch_size=0", (r"batch_size", r"positive")),
    "negative_grad_clip": Bad("train.grad_clip=-1", (r"grad_clip", r">= 0")),
    "misspelled_schedule": Bad("train.schedule=cosin", (r"\bcosin\b", r"did you mean 'cosine'")),
    "lr_not_a_number": Bad("train.lr=abc", (r"\babc\b", r"a number")),
    "negative_steps": Bad("train.max_steps=-5", (r"max_steps", r"-5", r"positive")),
}


def _with(base: list[str], *overrides: str) -> list[str]:
    """base with overrides replacing the same keys (a group option replaces its group)."""
    keys = {o.split("=", 1)[0] for o in overrides}
    return [o for o in base if o.split("=", 1)[0] not in keys] + list(overrides)


@dataclass(frozen=True)
class Dim:
    """One swept key of a validation sweep: its good values and its bad ones."""

    key: str
    good: tuple[str, ...]
    bad: tuple[str, ...] = ()  # keys of BAD; each one's override sets this key

    def values(self) -> list[tuple[str, str | None]]:
        """(override, BAD key or None)."""
        return [(f"{self.key}={v}", None) for v in self.good] + [(BAD[b].override, b) for b in self.bad]


@dataclass(frozen=True)
class SweepCase:
    fixed: list[str]
    dims: list[Dim]
    sweep_file: bool = False  # +sweep=smoke (its seed list cut to 0) rather than -m
    implicit: tuple[Dim, ...] = ()  # dims the sweep file adds (not on the command line)

    def args(self, out: Path) -> list[str]:
        swept = [f"{d.key}={','.join(v.split('=', 1)[1] for v, _ in d.values())}" for d in self.dims]
        head = ["+sweep=smoke", "hydra.sweeper.params.seed=0"] if self.sweep_file else ["-m"]
        keys = {d.key for d in self.dims}
        fixed = [o for o in self.fixed if o.split("=", 1)[0] not in keys]
        return [*head, *fixed, *swept, f"hydra.sweep.dir={out}/sweep", f"hydra.run.dir={out}/run"]

    def cells(self) -> list[tuple[list[str], list[str]]]:
        """(overrides of the swept keys, BAD keys among them) of every cell."""
        out = []
        for combo in product(*(d.values() for d in (*self.implicit, *self.dims))):
            out.append(([o for o, _ in combo], [b for _, b in combo if b]))
        return out


SWEEPS = {
    # +sweep=smoke (its 2 target sets) over the data files
    "sweep_data_files": SweepCase(
        fixed=[*LOCAL, "task.train_size=16", "task.val_size=32", "task.test_size=32", "train.max_steps=2"],
        dims=[Dim("task.path", ("good.csv",), ("missing_data_file", "malformed_data_file", "empty_data_file",
                                               "blank_data_file", "single_class_train"))],
        sweep_file=True,
        implicit=(Dim("targets", ("qv", "qkv_ffn")), Dim("seed", ("0",))),
    ),
    # -m over the label column and the training settings
    "sweep_columns_and_train": SweepCase(
        fixed=BASE,
        dims=[
            Dim("task.label_column", ("y",), ("missing_label_column",)),
            Dim("train.max_steps", ("2",), ("zero_steps",)),
            Dim("train.batch_size", ("4",), ("zero_batch_size",)),
        ],
    ),
    # -m over matrices and budgets on GPT-2 (fused attention, no ffn_gate)
    "sweep_targets_and_budget": SweepCase(
        fixed=_with(BASE, "model=tiny_gpt2", "budget=params"),
        dims=[
            Dim("targets.matrices", ("[q,v]",), ("unknown_matrix", "matrix_not_in_architecture")),
            Dim("budget.params", ("4096",), ("infeasible_budget", "zero_budget")),
        ],
    ),
    # -m over model sources and the fixed rank of budget=none
    "sweep_models_and_rank": SweepCase(
        fixed=_with(BASE, "model=custom", "budget=none"),
        dims=[
            Dim("model.name_or_path", ("bert_config",), ("missing_model_folder", "unreachable_hub_id")),
            Dim("lora.rank", ("8",), ("zero_rank",)),
        ],
    ),
}


# Sweeps in which a cell does not even compose: still one paragraph naming the bad value
# and what is valid, before anything trains.
UNCOMPOSABLE_SWEEPS = {
    "sweep_misspelled_key": ("train.max_stepz=3,4", BAD["misspelled_key"].needles),
    "sweep_unknown_option": ("targets=qv,qz", BAD["unknown_targets_option"].needles),
}


def single_args(name: str, out: Path) -> list[str]:
    bad = BAD[name]
    return [*_with(BASE, *bad.extra, bad.override), f"hydra.run.dir={out}/run", f"hydra.sweep.dir={out}/sweep"]


@dataclass
class Invocation:
    args: list[str]
    out: Path
    env: dict[str, str] = field(default_factory=dict)

    def run(self, cwd: Path) -> None:
        """Run the console script with stdout, stderr and the exit status in files of self.out."""
        self.out.mkdir(parents=True)
        with (self.out / "stdout").open("w") as stdout, (self.out / "stderr").open("w") as stderr:
            proc = start(self.args, cwd, stdout=stdout, stderr=stderr, **self.env)
            try:
                code = proc.wait(timeout=600)
            except subprocess.TimeoutExpired:
                kill_group(proc)
                code = proc.wait()
        (self.out / "rc").write_text(str(code))

    def result(self) -> Done:
        rc_file = self.out / "rc"
        assert rc_file.exists(), f"no exit status for {self.args}"
        return Done(self.args, int(rc_file.read_text()), (self.out / "stdout").read_text(), (self.out / "stderr").read_text())


@pytest.fixture(scope="module")
def validation_runs(data_dir, background, tmp_path_factory) -> dict[str, Invocation]:
    """Every validation invocation, each a `lora-ablate` process of its own, two at a time
    (while the background sweeps of the fault tests run on the other core)."""
    root = tmp_path_factory.mktemp("validation")
    invocations: dict[str, Invocation] = {}
    for name in BAD:
        out = root / name
        invocations[name] = Invocation(single_args(name, out), out)
    for name, case in SWEEPS.items():
        out = root / name
        invocations[name] = Invocation(case.args(out), out)
    for name, (override, _) in UNCOMPOSABLE_SWEEPS.items():
        out = root / name
        invocations[name] = Invocation(["-m", *BASE, override, f"hydra.sweep.dir={out}/sweep"], out)
    out = root / "full_error"
    invocations["full_error"] = Invocation(single_args("zero_steps", out), out, {"HYDRA_FULL_ERROR": "1"})
    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(lambda inv: inv.run(data_dir), invocations.values()))
    return invocations


def rejection_problems(done: Done, out: Path, needles: tuple[str, ...] = ()) -> list[str]:
    """What is wrong with how `done` rejected bad input (all of it, not just the first):
    it must exit non-zero before training with one paragraph, no traceback, naming the
    bad value and what is valid (the needles)."""
    message, problems = done.stderr.strip(), []
    if done.returncode != 2:
        problems.append(f"exit status {done.returncode}, not 2 (a user error)")
    if len(re.findall(r"^lora-ablate: error:", message, re.MULTILINE)) != 1:
        problems.append("not exactly one 'lora-ablate: error:' line")
    if "Traceback" in done.stderr:
        problems.append("a traceback on stderr")
    if not message:
        problems.append("no message on stderr")
    if re.search(r"\n\s*\n", message):
        problems.append("the message is not one paragraph (blank lines)")
    for needle in needles:
        if not re.search(needle, message, re.IGNORECASE):
            problems.append(f"the message does not match {needle!r}")
    if found := sorted(str(p.relative_to(out)) for p in out.rglob("result.json")):
        problems.append(f"records written: {found}")
    if trained(done.stdout + done.stderr):
        problems.append("training started")
    return problems


def assert_rejected_before_training(done: Done, out: Path, needles: tuple[str, ...] = ()) -> str:
    problems = rejection_problems(done, out, needles)
    assert not problems, "; ".join(problems) + "\n" + done.explain()
    return done.stderr.strip()


def assert_mentions(message: str, needles: tuple[str, ...], context: str) -> None:
    for needle in needles:
        assert re.search(needle, message, re.IGNORECASE), f"message does not match {needle!r}:\n{context}"


@pytest.mark.parametrize("name", list(BAD))
def test_single_run_rejects_bad_input_before_training(name, validation_runs):
    inv = validation_runs[name]
    done = inv.result()
    assert_rejected_before_training(done, inv.out, BAD[name].needles)


@pytest.mark.parametrize("name", list(SWEEPS))
def test_sweep_lists_every_bad_cell_before_any_run_trains(name, validation_runs):
    """The grid mixes good and bad values; the all-good cells come first and must not
    train; every cell with a bad value is listed (with that value's explanation when it is
    the cell's only bad value) and no good cell is."""
    inv, case = validation_runs[name], SWEEPS[name]
    done = inv.result()
    message = assert_rejected_before_training(done, inv.out)
    assert not (inv.out / "sweep").exists() or not any((inv.out / "sweep").iterdir()), (
        f"run folders made before validation finished: {sorted(os.listdir(inv.out / 'sweep'))}"
    )
    cells = case.cells()
    bad_cells = [c for c in cells if c[1]]
    assert re.search(rf"\b{len(bad_cells)}\b", message), f"expected {len(bad_cells)} bad cells of {len(cells)}:\n{done.explain()}"
    lines = message.splitlines()

    def line_of(overrides: list[str]) -> list[str]:
        pattern = [re.compile(rf"(?<![\w.]){re.escape(o)}(?=[,\]\s]|$)") for o in overrides]
        return [line for line in lines if all(p.search(line) for p in pattern)]

    for overrides, bad in cells:
        hits = line_of(overrides)
        if not bad:
            assert not hits, f"good cell {overrides} listed as bad: {hits}"
            continue
        assert hits, f"bad cell {overrides} (bad: {bad}) not listed:\n{done.explain()}"
        if len(bad) == 1:  # the explanation, not the echo of the cell, must name value and remedy
            text = " ".join(hits)
            for override in overrides:
                text = text.replace(override, "")
            assert_mentions(text, BAD[bad[0]].needles, f"cell {overrides}:\n{done.explain()}")


@pytest.mark.parametrize("name", list(UNCOMPOSABLE_SWEEPS))
def test_sweep_with_an_uncomposable_cell_is_rejected_before_training(name, validation_runs):
    inv = validation_runs[name]
    assert_rejected_before_training(inv.result(), inv.out, UNCOMPOSABLE_SWEEPS[name][1])


def test_full_error_shows_the_traceback(validation_runs):
    """HYDRA_FULL_ERROR=1 is for debugging: the same rejection, with the full traceback."""
    inv = validation_runs["full_error"]
    done = inv.result()
    assert done.returncode != 0, done.explain()
    assert "Traceback" in done.stderr and "max_steps" in done.stderr, done.explain()
    assert not list(inv.out.rglob("result.json"))


# ---------------------------------------------------------------------------------------
# 2. Faults
# ---------------------------------------------------------------------------------------

# The smoke sweep (2 target sets x 2 seeds) on the local data, a few steps per run.
FAULT_SWEEP = ["+sweep=smoke", *LOCAL, "task.path=good.csv", "task.train_size=96", "task.val_size=32",
               "task.test_size=64", "train.max_steps=8", "train.batch_size=8", "train.threads=1"]
GRID = {(t, s) for t in ("qv", "qkv_ffn") for s in (0, 1)}


def sweep_args(sweep_dir: Path, *extra: str) -> list[str]:
    return [*_with(FAULT_SWEEP, *extra), f"hydra.sweep.dir={sweep_dir}"]


def cell_of(record: dict) -> tuple[str, int]:
    return record["labels"]["target_set"], record["labels"]["seed"]


def assert_whole_grid(sweep_dir: Path, grid: set[tuple[str, int]] = GRID) -> dict[str, dict]:
    """One completed record per cell of the grid, each cell exactly once."""
    found = records(sweep_dir)
    cells = [cell_of(r) for r in found.values()]
    assert sorted(cells) == sorted(grid), f"records {sorted(found)} hold cells {sorted(cells)}"
    bad = {k: r["status"] for k, r in found.items() if r["status"] != "completed"}
    assert not bad, f"not completed: {bad}"
    return found


def diverged_args(sweep_dir: Path) -> list[str]:
    """lr=1e30 (first cell) and lr=0.01, clipping off, enough steps to blow up."""
    return ["-m", *_with(BASE, "train.max_steps=20"), "train.grad_clip=1e30", "train.lr=1e30,0.01",
            f"hydra.sweep.dir={sweep_dir}"]


class Background:
    """A command started now and collected later; output goes to files (a full pipe
    would stall it)."""

    def __init__(self, args: list[str], cwd: Path, out: Path, kill_when=None):
        """kill_when: a predicate polled while the command runs; when it holds, the whole
        process group gets SIGKILL (self.killed tells whether it did)."""
        out.mkdir(parents=True, exist_ok=True)
        self.args, self.out = args, out
        self.began = time.monotonic()
        with (out / "stdout").open("w") as stdout, (out / "stderr").open("w") as stderr:
            self.proc = start(args, cwd, stdout=stdout, stderr=stderr)
        self.wall: float | None = None
        self.killed = False
        if kill_when is not None:
            threading.Thread(target=self._watch, args=(kill_when,), daemon=True).start()

    def _watch(self, kill_when) -> None:
        while self.proc.poll() is None:
            if kill_when():
                kill_group(self.proc)
                self.killed = True
                return
            time.sleep(0.05)

    def result(self, timeout: float = 900) -> Done:
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_group(self.proc)
            self.proc.wait()
        if self.wall is None:
            self.wall = time.monotonic() - self.began
        return Done(self.args, self.proc.returncode, (self.out / "stdout").read_text(), (self.out / "stderr").read_text())


@pytest.fixture(scope="module")
def background(data_dir, tmp_path_factory):
    """The sweeps that several tests read, started as early as possible."""
    root = tmp_path_factory.mktemp("background")
    killed_dir = root / "killed" / "sweep"
    jobs = {
        # killed (SIGKILL to its process group) as soon as its first record is complete
        "killed": Background(sweep_args(killed_dir), data_dir, root / "killed" / "log",
                             kill_when=lambda: completed_count(killed_dir) >= 1),
        "reference": Background(sweep_args(root / "reference" / "sweep"), data_dir, root / "reference" / "log"),
        "diverged": Background(diverged_args(root / "diverged" / "sweep"), data_dir, root / "diverged" / "log"),
    }
    yield jobs
    for job in jobs.values():
        if job.proc.poll() is None:
            kill_group(job.proc)
            job.proc.wait()


@pytest.fixture(scope="module")
def reference(background) -> tuple[Path, dict[str, dict], float]:
    """The fault sweep, uninterrupted: (its dir, its records, its wall time)."""
    job = background["reference"]
    sweep_dir = Path(job.args[-1].split("=", 1)[1])
    done = job.result()
    wall = job.wall
    assert done.returncode == 0, done.explain()
    assert (sweep_dir / "report" / "report.html").is_file(), done.explain()
    found = assert_whole_grid(sweep_dir)
    metrics = {r["metrics"].get("test/loss") for r in found.values()}
    assert len(metrics) > 1, "every cell has the same test loss: the sweep does not tell the runs apart"
    return sweep_dir, found, wall


def assert_same_metrics(found: dict[str, dict], reference_records: dict[str, dict]) -> None:
    assert set(found) == set(reference_records)
    for key, record in found.items():
        assert record["metrics"] == reference_records[key]["metrics"], (
            f"{key}: metrics differ from the uninterrupted sweep:\n{record['metrics']}\n{reference_records[key]['metrics']}"
        )


def wait_for(predicate, proc: subprocess.Popen, timeout: float = 600) -> bool:
    """Poll until predicate() or the process ends; False when it ended first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        if proc.poll() is not None:
            return predicate()
        time.sleep(0.05)
    kill_group(proc)
    pytest.fail("timed out waiting for the sweep")


def completed_count(sweep_dir: Path) -> int:
    count = 0
    for path in sweep_dir.rglob("result.json"):
        try:
            count += json.loads(path.read_text()).get("status") == "completed"
        except (OSError, json.JSONDecodeError):
            pass
    return count


def test_sigkill_loses_only_the_run_in_flight(data_dir, background, reference):
    """Kill the sweep right after its first record; the rerun trains exactly the missing
    runs, leaves the finished one alone, and ends where an uninterrupted sweep ends."""
    _, reference_records, _ = reference
    job = background["killed"]
    sweep_dir = Path(job.args[-1].split("=", 1)[1])
    done = job.result()
    assert job.killed, f"the sweep ended before its first record could be seen:\n{done.explain()}"
    before = records(sweep_dir)  # every record whole
    kept = {k: v for k, v in stamps(sweep_dir).items() if before[k]["status"] == "completed"}
    assert 1 <= len(kept) < len(GRID), f"the kill came too late to test anything: {sorted(before)}"

    done = run_cli(sweep_args(sweep_dir), data_dir)
    assert done.returncode == 0, done.explain()
    after = stamps(sweep_dir)
    for key, stamp in kept.items():
        assert after[key] == stamp, f"{key} was completed before the kill but was written again"
    assert_same_metrics(assert_whole_grid(sweep_dir), reference_records)
    assert (sweep_dir / "report" / "report.html").is_file()


@pytest.mark.slow
def test_sigkill_at_random_moments_then_rerun(data_dir, tmp_path):
    """Several SIGKILLs of the whole process group at random moments (startup, validation,
    training, record writing, report), each followed by the same command again; finally
    one uninterrupted rerun. Nothing completed is ever retrained or damaged, and the
    result equals an uninterrupted sweep's. (3 seeds x 2 target sets, longer runs.)"""
    longer = ("hydra.sweeper.params.seed='0,1,2'", "train.max_steps=150")
    grid = {(t, s) for t in ("qv", "qkv_ffn") for s in (0, 1, 2)}
    reference_dir = tmp_path / "reference"
    began = time.monotonic()
    done = run_cli(sweep_args(reference_dir, *longer), data_dir)
    wall = time.monotonic() - began
    assert done.returncode == 0, done.explain()
    reference_records = assert_whole_grid(reference_dir, grid)

    seed = int.from_bytes(os.urandom(4), "little")
    rng = random.Random(seed)
    sweep_dir = tmp_path / "sweep"
    kept: dict[str, tuple[int, str]] = {}
    for attempt in range(8):
        job = Background(sweep_args(sweep_dir, *longer), data_dir, tmp_path / f"log{attempt}")
        # a moment within roughly what is left to do (startup and report included)
        delay = rng.uniform(0.3, max(5.0, wall * (len(grid) - len(kept) + 1) / (len(grid) + 1)))
        deadline = time.monotonic() + delay
        while time.monotonic() < deadline and job.proc.poll() is None:
            time.sleep(0.02)
        running = job.proc.poll() is None
        kill_group(job.proc)
        job.proc.wait()
        now, found = stamps(sweep_dir), records(sweep_dir)  # every record whole
        for key, stamp in kept.items():
            assert now.get(key) == stamp, f"seed {seed}, kill {attempt}: {key} was completed before, then rewritten"
        kept = {k: v for k, v in now.items() if found[k]["status"] == "completed"}
        print(f"seed {seed}: kill {attempt} after {delay:.1f} s ({'running' if running else 'had ended'}); "
              f"{len(kept)} of {len(grid)} completed")
        if not running:
            break
    done = run_cli(sweep_args(sweep_dir, *longer), data_dir)
    assert done.returncode == 0, f"seed {seed}\n{done.explain()}"
    after = stamps(sweep_dir)
    for key, stamp in kept.items():
        assert after[key] == stamp, f"seed {seed}: {key} was completed before the last kill but was written again"
    assert_same_metrics(assert_whole_grid(sweep_dir, grid), reference_records)
    assert (sweep_dir / "report" / "report.html").is_file()


def read_stderr_in_background(proc: subprocess.Popen) -> list[str]:
    """stderr as it arrives (raw reads: the progress bar has no newlines)."""
    chunks: list[str] = []
    fd = proc.stderr.fileno()

    def pump():
        for chunk in iter(lambda: os.read(fd, 65536), b""):
            chunks.append(chunk.decode(errors="replace"))

    threading.Thread(target=pump, daemon=True).start()
    return chunks


@pytest.mark.parametrize("mode, sig", [pytest.param("single", signal.SIGINT, marks=pytest.mark.slow),
                                       ("sweep", signal.SIGINT), ("sweep", signal.SIGTERM)])
def test_ctrl_c_or_sigterm_stops_cleanly_and_records_the_run_as_interrupted(mode, sig, data_dir, tmp_path):
    """SIGINT to the process group (what Ctrl-C does), or SIGTERM (kill, a SLURM time
    limit), while a run trains: the command stops (no next cell), without a traceback,
    and the run's record says interrupted."""
    long = [*BASE, "train.max_steps=100000", f"hydra.run.dir={tmp_path}/run", f"hydra.sweep.dir={tmp_path}/sweep"]
    args = ["-m", *long, "seed=0,1"] if mode == "sweep" else long
    proc = start(args, data_dir)
    chunks = read_stderr_in_background(proc)
    assert wait_for(lambda: PROGRESS_BAR.search("".join(chunks)), proc, timeout=300), "".join(chunks)[-3000:]
    time.sleep(1.0)  # some steps in
    kill_group(proc, sig)
    try:
        proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        pytest.fail(f"the command did not stop within 120 s of Ctrl-C; its stderr ends:\n{''.join(chunks)[-3000:]}")
    time.sleep(0.2)  # the reader thread drains the pipe
    stderr = "".join(chunks)
    assert proc.returncode != 0, stderr[-3000:]
    found = records(tmp_path)
    assert len(found) == 1, f"expected the one interrupted run, found {sorted(found)} (did the sweep go on?)"
    (record,) = found.values()
    assert record["status"] == "interrupted", record["status"]
    assert record["error"] and record["error"]["type"] in ("KeyboardInterrupt", "Interrupted"), record["error"]
    assert not record["metrics"], record["metrics"]
    assert "Traceback" not in stderr, f"Ctrl-C printed a traceback:\n{stderr[-3000:]}"


def test_corrupt_record_is_reported_then_rerun(data_dir, reference, tmp_path):
    """Garbage in one result.json and half of another: lora-ablate-report lists both as
    corrupt (runs.csv and report.html); the sweep reruns exactly those two."""
    ref_dir, reference_records, _ = reference
    sweep_dir = tmp_path / "sweep"
    shutil.copytree(ref_dir, sweep_dir)
    shutil.rmtree(sweep_dir / "report")
    keys = sorted(reference_records)
    garbage, half = sweep_dir / keys[0] / "result.json", sweep_dir / keys[1] / "result.json"
    garbage.write_bytes(b"\x00\xffnot json at all {{{")
    text = half.read_text()
    half.write_text(text[: len(text) // 2])
    untouched = {k: v for k, v in stamps(sweep_dir).items() if k not in keys[:2]}

    done = run_cli([str(sweep_dir)], data_dir, script="lora-ablate-report")
    assert done.returncode == 0, done.explain()
    import pandas as pd

    runs = pd.read_csv(sweep_dir / "report" / "runs.csv")
    corrupt = runs[runs["status"] == "corrupt"]
    listed = {str(Path(p).parent) for p in corrupt["path"]}
    assert listed == {keys[0], keys[1]}, f"runs.csv corrupt rows: {corrupt[['path', 'status', 'error']].to_dict('records')}"
    html = (sweep_dir / "report" / "report.html").read_text()
    assert "corrupt" in html.lower()
    for key in keys[:2]:
        assert key in html, f"{key} not named in report.html"

    done = run_cli(sweep_args(sweep_dir), data_dir)
    assert done.returncode == 0, done.explain()
    now = stamps(sweep_dir)
    for key, stamp in untouched.items():
        assert now[key] == stamp, f"{key} was whole and completed but was written again"
    assert_same_metrics(assert_whole_grid(sweep_dir), reference_records)
    runs = pd.read_csv(sweep_dir / "report" / "runs.csv")
    assert set(runs["status"]) == {"completed"}, runs[["path", "status"]].to_dict("records")


def test_diverged_run_is_recorded_and_the_sweep_goes_on(background):
    """lr=1e30 with no effective clipping diverges; its record says so, the next cell
    trains, and the sweep writes its report (a diverged run is a result, not a crash)."""
    job = background["diverged"]
    sweep_dir = Path(job.args[-1].split("=", 1)[1])
    done = job.result()
    assert done.returncode == 0, done.explain()
    found = records(sweep_dir)
    by_lr = {r["config"]["train"]["lr"]: r for r in found.values()}
    assert set(by_lr) == {1e30, 0.01}, sorted(found)
    diverged, fine = by_lr[1e30], by_lr[0.01]
    assert diverged["status"] == "diverged", (diverged["status"], diverged.get("error"))
    assert diverged["error"], diverged
    assert fine["status"] == "completed", (fine["status"], fine.get("error"))
    assert diverged["provenance"]["ended_at"] <= fine["provenance"]["started_at"], "the diverged cell was not first"
    report = sweep_dir / "report"
    assert (report / "report.html").is_file(), done.explain()
    import pandas as pd

    runs = pd.read_csv(report / "runs.csv")
    assert sorted(runs["status"]) == ["completed", "diverged"], (
        "runs.csv must list both cells of the sweep (they differ in train.lr only):\n"
        f"{runs[['path', 'run_id', 'status']].to_dict('records')}"
    )


# ---------------------------------------------------------------------------------------
# 3. Files the project reads and writes in shared folders
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["symlink", "dangling_symlink", "hardlink", "fifo", "folder"])
def test_run_lock_never_opens_what_is_not_its_own_plain_file(kind, tmp_path):
    """A `.lock` that is a link (to another user's file), a FIFO or a folder is refused
    with a clear error; the file it points to keeps its content."""
    from lora_ablate.errors import ConfigError
    from lora_ablate.run.interrupts import RunLock

    run_dir, other = tmp_path / "cell", tmp_path / "someone_elses.txt"
    run_dir.mkdir()
    other.write_text("precious")
    lock = run_dir / ".lock"
    if kind == "symlink":
        lock.symlink_to(other)
    elif kind == "dangling_symlink":
        lock.symlink_to(tmp_path / "would_be_created")
    elif kind == "hardlink":
        os.link(other, lock)
    elif kind == "fifo":
        os.mkfifo(lock)
    else:
        lock.mkdir()
    with pytest.raises(ConfigError, match=r"\.lock") as caught:
        with RunLock(run_dir, "cell-x"):
            pytest.fail("the lock was taken")
    assert "cell-x" in str(caught.value) and "Remove it" in str(caught.value)
    assert other.read_text() == "precious"
    assert not (tmp_path / "would_be_created").exists()


def test_run_lock_on_its_own_file_names_its_holder_and_empties_on_release(tmp_path):
    from lora_ablate.run.interrupts import RunLock

    with RunLock(tmp_path, "cell-x"):
        assert (tmp_path / ".lock").read_text().startswith(f"pid {os.getpid()} ")
    assert (tmp_path / ".lock").read_text() == ""


def test_records_that_are_not_regular_files_or_too_big_are_listed_unread(tmp_path, monkeypatch):
    from lora_ablate import records

    (tmp_path / "fifo").mkdir()
    os.mkfifo(tmp_path / "fifo" / "result.json")  # reading it would hang the report
    (tmp_path / "big").mkdir()
    (tmp_path / "big" / "result.json").write_text("{" + " " * 4096 + "}")
    monkeypatch.setattr(records, "MAX_RECORD_BYTES", 1024)
    found = {p.path.parent.name: p for p in records.find_records(tmp_path)}
    assert found["fifo"].record is None and "not a regular file" in found["fifo"].problem
    assert found["big"].record is None and "limit" in found["big"].problem


def _cell_records(tmp_path: Path):
    """One cell's completed record of config A, then one of config B (newer) written over it,
    so A is moved aside: an edited sweep file, reverted."""
    import dataclasses

    import numpy as np
    from fake_records import make_record

    from lora_ablate.records import write_record

    first = make_record(model="minilm", task="rt_sentiment", target_set="qv", budget="reference",
                        scale=1.0, seed=0, accuracy=0.8, history_points=2, index=0,
                        rng=np.random.default_rng(0), test_size=0)
    later = dataclasses.replace(first, config_hash="b" * 16, metrics={**first.metrics, "test/accuracy": 0.6},
                                provenance=dataclasses.replace(first.provenance, ended_at="2999-01-01T00:00:00"))
    run_dir = tmp_path / "cell"
    write_record(run_dir, first)
    write_record(run_dir, later)  # moves `first` aside as result.<hash>.json
    return first, later


def test_report_uses_the_record_of_the_cells_current_config(tmp_path):
    """The manifest's config hash for the cell decides, not which record is newer."""
    from lora_ablate.app.sweeper import write_manifest
    from lora_ablate.records import find_records
    from lora_ablate.report.runs import record_frames

    first, later = _cell_records(tmp_path)
    for current, superseded in ((first, later), (later, first)):
        write_manifest(tmp_path, "edited", [], [["cell"]], {"cell": current.config_hash})
        manifest = json.loads((tmp_path / "manifest.json").read_text())
        manifest["cells"][0]["run_dir"] = "cell"  # (run_dirname of a bare override list)
        (tmp_path / "manifest.json").write_text(json.dumps(manifest))
        frames = record_frames(find_records(tmp_path), root=tmp_path)
        assert list(frames.runs["config_hash"]) == [current.config_hash]
        assert list(frames.runs["test/accuracy"]) == [current.metrics["test/accuracy"]]
        assert list(frames.superseded["config_hash"]) == [superseded.config_hash]


def test_a_nan_metric_is_left_out_of_the_statistics_and_named(tmp_path):
    from fake_records import write_fake_sweep

    from lora_ablate.records import find_records
    from lora_ablate.report.runs import record_frames

    paths = write_fake_sweep(tmp_path, target_sets=("qv", "q"), seeds=range(3), test_size=0)
    data = json.loads(paths[0].read_text())
    data["metrics"]["test/accuracy"] = float("nan")
    paths[0].write_text(json.dumps(data))  # json writes NaN, as a foreign tool might
    runs = record_frames(find_records(tmp_path), root=tmp_path).runs
    row = runs[runs["path"] == str(paths[0].relative_to(tmp_path))].iloc[0]
    assert pd_isna(row["test/accuracy"]) and "test/accuracy=nan" in row["error"]
    assert runs["test/accuracy"].notna().sum() == len(paths) - 1


def pd_isna(value) -> bool:
    import pandas as pd

    return bool(pd.isna(value))


@pytest.mark.parametrize("contents, needle", [
    ({"notes.txt": "mine"}, r"no manifest\.json"),
    ({"manifest.json": "[1, 2, 3]"}, r"manifest.*cannot be read"),
    ({"manifest.json": '{"cells": []}', "thesis.tex": "mine"}, r"thesis\.tex"),
])
def test_a_sweep_folder_lora_ablate_did_not_write_is_refused(contents, needle, tmp_path):
    from lora_ablate.app.sweep_folder import check_sweep_folder
    from lora_ablate.errors import ConfigError

    for name, text in contents.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(ConfigError, match=needle) as caught:
        check_sweep_folder(tmp_path, ["a_cell"], reuse=False)
    malformed = "[1" in contents.get("manifest.json", "")
    assert malformed or "sweep_reuse=true" in str(caught.value)
    if malformed:  # a broken manifest is refused even with reuse: it would be overwritten
        with pytest.raises(ConfigError):
            check_sweep_folder(tmp_path, ["a_cell"], reuse=True)
    else:
        check_sweep_folder(tmp_path, ["a_cell"], reuse=True)


def test_a_folder_of_an_earlier_sweep_is_accepted(tmp_path):
    from lora_ablate.app.sweep_folder import check_sweep_folder

    check_sweep_folder(tmp_path / "new", ["a_cell"], reuse=False)
    (tmp_path / "manifest.json").write_text(json.dumps({"cells": [{"run_dir": "old_cell"}]}))
    for name in ("old_cell", "a_cell", "report", ".submitit"):
        (tmp_path / name).mkdir()
    (tmp_path / "multirun.yaml").write_text("{}")
    (tmp_path / ".manifest.json.x1.tmp").write_text("")  # left by a killed write
    (tmp_path / "custom_subdir" / ".hydra").mkdir(parents=True)  # hydra.sweep.subdir=custom_subdir
    check_sweep_folder(tmp_path, ["a_cell"], reuse=False)
    (tmp_path / "not_a_run").mkdir()
    with pytest.raises(Exception, match="not_a_run"):
        check_sweep_folder(tmp_path, ["a_cell"], reuse=False)


@pytest.mark.parametrize("name, expected", [("../../../x", "_.._.._x"), ("..", "sweep"), ("/etc", "_etc"),
                                            ("smoke", "smoke")])
def test_sweep_name_stays_a_folder_under_outputs(name, expected):
    from lora_ablate.app.store import sweep_dirname

    cleaned = sweep_dirname(name)
    assert "/" not in cleaned and not cleaned.startswith(".")
    assert cleaned == expected or cleaned.startswith(expected.split("~")[0])


@pytest.mark.parametrize("failure", ["disk_full", "bad_setting"])
def test_a_report_that_cannot_be_written_fails_the_command(failure, tmp_path, monkeypatch, capsys):
    """The sweep's records are kept, but the command exits 1 with one paragraph saying why
    and how to write the report later."""
    import errno

    from omegaconf import OmegaConf

    from lora_ablate.app.callbacks import ReportCallback
    from lora_ablate.errors import ConfigError
    from lora_ablate.report import render

    (tmp_path / "cell").mkdir()
    (tmp_path / "cell" / "result.json").write_text("{}")
    error = (OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "report" / "report.html"))
             if failure == "disk_full" else ConfigError("report.metric 'test/f1' is not recorded."))

    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(render, "write_report", fail)
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}, "report": {}, "dry_run": False})
    with pytest.raises(SystemExit) as exited:
        ReportCallback().on_multirun_end(config)
    assert exited.value.code == 1
    message = capsys.readouterr().err.strip()
    assert message.startswith("lora-ablate: error: no report was written") and "\n" not in message
    assert f"lora-ablate-report {tmp_path}" in message
    assert ("disk is full" in message and "report.html" in message) if failure == "disk_full" else "test/f1" in message


def test_a_run_says_each_phase_and_ends_with_its_metric_and_record(data_dir, tmp_path, monkeypatch, caplog):
    import logging

    from helpers import compose_run

    from lora_ablate.run.progress import SWEEP_CELLS_ENV
    from lora_ablate.run.runner import JobSlot, train

    monkeypatch.setenv(SWEEP_CELLS_ENV, "4")
    cfg = compose_run([*_with(BASE, f"task.path={data_dir / 'good.csv'}"), "analysis.enabled=false"])
    with caplog.at_level(logging.INFO, logger="lora_ablate"):
        record = train(cfg, run_dir=tmp_path, job=JobSlot(index=2, parallel_jobs=2))
    said = [r.getMessage() for r in caplog.records if r.name.startswith("lora_ablate.run")]
    assert all(m.startswith(f"cell 3 of 4: {record.labels.target_set} seed=0") for m in said), said
    for phase in ("loading tiny_bert", "training 2 steps", "validation (32 examples)", "test (32 examples)"):
        assert any(phase in m for m in said), (phase, said)
    metric = record.metrics["test/accuracy"]
    assert said[-1].endswith(f"completed, test/accuracy {metric:.4f}; record: {tmp_path / 'result.json'}"), said[-1]
