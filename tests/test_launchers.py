"""Scale-out: the smoke sweep completes, with its report and every run recorded exactly
once, under the joblib (`hydra/launcher=parallel`) and `submitit_local` launchers; the
SLURM preset (`hydra/launcher=slurm`) composes without submitting anything; with the `ray`
extra, a two-cell sweep runs on a local Ray instance (`hydra/launcher=ray`).

Each test starts the `lora-ablate` console script with WANDB_MODE=disabled,
HF_HUB_OFFLINE=1 and the caller's LORA_ABLATE_CACHE (unset: the package default)."""

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from cli_helpers import Done, kill_group, records, run_cli, start

# ---------------------------------------------------------------------------------------

SMOKE = ["+sweep=smoke", "train.max_steps=2", "task.train_size=64", "task.val_size=32", "task.test_size=32"]
GRID = {(t, s) for t in ("qv", "qkv_ffn") for s in (0, 1)}  # sweeps/smoke.yaml


@pytest.fixture
def no_sbatch(tmp_path) -> tuple[dict[str, str], Path]:
    """PATH with fake sbatch/srun/squeue that only leave a mark: anything submitted shows."""
    bin_dir, mark = tmp_path / "fake_bin", tmp_path / "submitted"
    bin_dir.mkdir()
    for tool in ("sbatch", "srun", "squeue", "scancel", "sacct"):
        script = bin_dir / tool
        script.write_text(f'#!/bin/sh\necho "{tool} $*" >> "{mark}"\nexit 1\n')
        script.chmod(0o755)
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}, mark


def test_slurm_launcher_composes_without_submitting(tmp_path, no_sbatch):
    env, mark = no_sbatch
    sweep_dir = tmp_path / "sweep"
    args = [*SMOKE, "hydra/launcher=slurm", "hydra.launcher.partition=gpu", f"hydra.sweep.dir={sweep_dir}", "--cfg", "hydra"]
    done = run_cli(args, tmp_path, **env)
    assert done.returncode == 0, done.explain()
    hydra = yaml.safe_load(done.stdout)["hydra"]
    launcher = hydra["launcher"]
    assert launcher["_target_"].endswith("SlurmLauncher"), launcher
    assert launcher["gpus_per_node"] == 1 and launcher["tasks_per_node"] == 1 and launcher["nodes"] == 1, launcher
    assert launcher["partition"] == "gpu", launcher
    assert launcher["timeout_min"] > 0 and launcher["array_parallelism"] > 0, launcher
    assert ".submitit" in launcher["submitit_folder"], launcher
    assert hydra["runtime"]["choices"]["hydra/launcher"] == "slurm"
    assert "targets" in hydra["sweeper"]["params"] and "seed" in hydra["sweeper"]["params"], hydra["sweeper"]
    assert not mark.exists(), mark.read_text()
    assert not sweep_dir.exists(), sorted(os.listdir(sweep_dir))


@pytest.mark.slow
def test_slurm_sweep_with_a_bad_cell_submits_nothing(tmp_path, no_sbatch):
    """Validation runs before the launcher: a bad cell stops the sweep before sbatch."""
    env, mark = no_sbatch
    sweep_dir = tmp_path / "sweep"
    done = run_cli([*SMOKE, "hydra/launcher=slurm", "train.max_steps=2,0", f"hydra.sweep.dir={sweep_dir}"], tmp_path, **env)
    assert done.returncode != 0, done.explain()
    assert "max_steps" in done.stderr and "Traceback" not in done.stderr, done.explain()
    assert not mark.exists(), f"submitted although a cell is invalid: {mark.read_text()}"
    assert not list(sweep_dir.rglob("result.json"))


def check_smoke_sweep(done: Done, sweep_dir: Path) -> dict[str, dict]:
    """The sweep ended well, wrote its report and one completed record per cell."""
    assert done.returncode == 0, done.explain()
    assert (sweep_dir / "report" / "report.html").is_file(), done.explain()
    found = records(sweep_dir)
    cells = sorted((r["labels"]["target_set"], r["labels"]["seed"]) for r in found.values())
    assert cells == sorted(GRID), f"records {sorted(found)} hold cells {cells}"
    assert {r["status"] for r in found.values()} == {"completed"}, {k: r["status"] for k, r in found.items()}
    assert len({r["run_id"] for r in found.values()}) == len(GRID)
    manifest = json.loads((sweep_dir / "manifest.json").read_text())
    hashes = {c["run_dir"]: c.get("config_hash") for c in manifest["cells"]}
    assert hashes == {run_dir: r["config_hash"] for run_dir, r in found.items()}, "manifest and records disagree"
    import pandas as pd

    runs = pd.read_csv(sweep_dir / "report" / "runs.csv")
    assert len(runs) == len(GRID) and set(runs["status"]) == {"completed"}, runs[["path", "status"]].to_dict("records")
    return found


def test_parallel_launcher_completes_the_smoke_sweep(tmp_path):
    sweep_dir = tmp_path / "sweep"
    done = run_cli([*SMOKE, "hydra/launcher=parallel", f"hydra.sweep.dir={sweep_dir}"], tmp_path)
    found = check_smoke_sweep(done, sweep_dir)
    # two jobs share the machine: each gets half the cores (preset's documented behaviour)
    threads = {r["provenance"].get("torch_threads") for r in found.values()}
    assert threads == {max(1, (os.cpu_count() or 1) // 2)}, threads


@pytest.mark.slow
def test_submitit_local_launcher_completes_the_smoke_sweep(tmp_path):
    sweep_dir = tmp_path / "sweep"
    done = run_cli([*SMOKE, "hydra/launcher=submitit_local", f"hydra.sweep.dir={sweep_dir}"], tmp_path)
    check_smoke_sweep(done, sweep_dir)


# ---------------------------------------------------------------------------------------
# Stopping a sweep whose cells run in worker processes
# ---------------------------------------------------------------------------------------

ROWS = [(f"film {i} was {'great fun' if i % 2 else 'dull and slow'}", "pos" if i % 2 else "neg") for i in range(120)]
# Two cells that train side by side for long enough to be stopped mid-training (a few
# seconds each on an idle machine), then again to the end on the rerun.
STOPPED = ["-m", "model=tiny_bert", "task=local", "task.path=stop.csv", "task.text_column=text",
           "task.label_column=label", "task.train_size=32", "task.val_size=16", "task.test_size=16",
           "train.max_steps=300", "train.batch_size=4", "train.threads=1", "analysis.enabled=false",
           "seed=0,1"]
TRAINING = re.compile(r"cell (\d+) of 2: .*: training \d+ steps")


@pytest.fixture(scope="module")
def stop_folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("stop")
    (root / "stop.csv").write_text("text,label\n" + "".join(f"{t},{y}\n" for t, y in ROWS))
    return root


def stop_args(sweep_dir: Path, launcher: str) -> list[str]:
    return [*STOPPED, f"hydra/launcher={launcher}", f"hydra.sweep.dir={sweep_dir}"]


@pytest.fixture(scope="module")
def uninterrupted(stop_folder) -> dict[str, dict]:
    """The stop tests' sweep, run to the end without a signal: the metrics a rerun must reach."""
    sweep_dir = stop_folder / "uninterrupted"
    done = run_cli(stop_args(sweep_dir, "parallel"), stop_folder)
    assert done.returncode == 0, done.explain()
    found = records(sweep_dir)
    assert len(found) == 2 and {r["status"] for r in found.values()} == {"completed"}, sorted(found)
    return found


def processes_in_group(pgid: int) -> list[str]:
    """'pid command' of every live process whose process group is pgid."""
    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text.rsplit(")", 1)[1].split()
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            cmdline = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            alive.append(f"{stat.parent.name} {cmdline[:150]}")
    return alive


SLOW_RECORD = """\
# Written by tests/test_launchers.py: cell seed=1 takes SLOW_RECORD_SECONDS longer to write
# an interrupted record, as on a busy machine, so the other worker has exited by then.
import time

from lora_ablate import records

_write_record = records.write_record


def write_record(run_dir, record):
    if record.status == records.Status.interrupted and record.labels.seed == 1:
        time.sleep({seconds})
    return _write_record(run_dir, record)


records.write_record = write_record
"""
SLOW_RECORD_SECONDS = 3


@pytest.fixture
def slow_record(tmp_path) -> dict[str, str]:
    """The environment for a sweep whose cell seed=1 is slow to write an interrupted record
    (a sitecustomize module on PYTHONPATH, which every process of the sweep runs at start)."""
    folder = tmp_path / "slow_record"
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(SLOW_RECORD.format(seconds=SLOW_RECORD_SECONDS))
    paths = [str(folder), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {"PYTHONPATH": os.pathsep.join(paths)}


def wait_until_both_cells_train(proc, log: Path, sweep_dir: Path, timeout: float = 300) -> None:
    """Until both cells log that they train (submitit_local's jobs log to .submitit/)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        logs = [log, *sweep_dir.glob(".submitit/*/*_log.*")]
        if len(set(TRAINING.findall("".join(p.read_text(errors="replace") for p in logs)))) == 2:
            return
        if proc.poll() is not None:
            pytest.fail(f"the sweep ended before both cells trained:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)
    kill_group(proc)
    pytest.fail(f"both cells were not training within {timeout} s:\n{log.read_text()[-3000:]}")


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds the sweep's processes through /proc")
@pytest.mark.parametrize("launcher, sig", [
    ("parallel", signal.SIGTERM),
    pytest.param("parallel", signal.SIGINT, marks=pytest.mark.slow),
    pytest.param("parallel", signal.SIGKILL, marks=pytest.mark.slow),
    pytest.param("submitit_local", signal.SIGTERM, marks=pytest.mark.slow),
    pytest.param("submitit_local", signal.SIGKILL, marks=pytest.mark.slow),
])
def test_a_stopped_sweep_leaves_no_process_and_the_rerun_completes_it(launcher, sig, stop_folder, uninterrupted,
                                                                     slow_record, tmp_path):
    """The signal goes to the sweep's parent process only (what `kill PID`, a SLURM time limit
    or a closed terminal's supervisor sends): 10 s later no process of the sweep is alive;
    after SIGINT/SIGTERM both cells that were training have an `interrupted` record and
    the parent said so in one line; the same command again completes the grid with the
    metrics of an uninterrupted sweep. One cell writes its record seconds after the other
    (`slow_record`): the first worker's exit must not cost the second its record."""
    sweep_dir, log = tmp_path / "sweep", tmp_path / "log"
    args = stop_args(sweep_dir, launcher)
    env = slow_record if sig != signal.SIGKILL else {}
    with log.open("w") as out:
        proc = start(args, stop_folder, stdout=out, stderr=subprocess.STDOUT, **env)
    wait_until_both_cells_train(proc, log, sweep_dir)
    os.kill(proc.pid, sig)
    signalled = time.monotonic()
    try:
        proc.wait(timeout=90)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        pytest.fail(f"the parent did not stop within 90 s of {sig.name}:\n{log.read_text()[-3000:]}")
    time.sleep(max(0.0, signalled + 10 - time.monotonic()))
    left = processes_in_group(proc.pid)
    if left:
        kill_group(proc)
    assert not left, f"alive 10 s after {sig.name} to the parent:\n" + "\n".join(left)

    found = records(sweep_dir)
    output = log.read_text()
    if sig != signal.SIGKILL:
        assert proc.returncode == 128 + sig, (proc.returncode, output[-3000:])
        assert len(found) == 2 and {r["status"] for r in found.values()} == {"interrupted"}, (
            {k: r["status"] for k, r in found.items()}, output[-3000:])
        stopped = [line for line in output.splitlines() if line.startswith("lora-ablate: stopped by")]
        assert len(stopped) == 1 and "2 runs in flight recorded as interrupted" in stopped[0], output[-3000:]
        assert "Run the same command again" in stopped[0]
        assert "Traceback" not in output, output[-3000:]
    else:  # no parent left to tell: the workers stop themselves, recording what they had
        assert {r["status"] for r in found.values()} <= {"interrupted"}, {k: r["status"] for k, r in found.items()}

    done = run_cli(args, stop_folder)
    assert done.returncode == 0, done.explain()
    rerun = records(sweep_dir)
    assert {r["status"] for r in rerun.values()} == {"completed"} and len(rerun) == 2, sorted(rerun)
    assert {k: r["metrics"] for k, r in rerun.items()} == {k: r["metrics"] for k, r in uninterrupted.items()}
    assert "sweep: 2 of 2 cells done (2 completed" in done.stdout + done.stderr, done.explain()


def test_loky_holds_its_kill_until_the_stopped_workers_have_exited():
    """loky SIGKILLs every worker once one exits unasked; during a stop it first waits for
    the stopped workers (here a process that takes a second to finish on its own)."""
    from joblib.externals.loky import process_executor  # what hydra/launcher=parallel loads

    from lora_ablate.run.workers import loky_waits_for

    manager = process_executor._ExecutorManagerThread
    original = manager.kill_workers
    worker = subprocess.Popen(["sleep", "1"])
    try:
        with loky_waits_for([worker.pid]):
            manager.kill_workers(SimpleNamespace(processes={}), reason="broken executor")
            returned_with_worker_alive = worker.poll() is None
    finally:
        worker.kill()
        worker.wait()
    assert not returned_with_worker_alive, "loky's kill went ahead while the stopped worker was still running"
    assert manager.kill_workers is original


@pytest.mark.slow
def test_ray_launcher_runs_a_sweep_on_a_local_ray_instance(stop_folder, tmp_path):
    """With the `ray` extra installed: hydra/launcher=ray starts a local Ray instance (one
    CPU) and runs both cells as Ray tasks, each recorded once, then the report."""
    pytest.importorskip("ray", reason="the ray extra is not installed (pip install -e '.[ray]')")
    pytest.importorskip("hydra_plugins.hydra_ray_launcher", reason="hydra-ray-launcher is not installed")
    sweep_dir = tmp_path / "sweep"
    short = [arg for arg in STOPPED if not arg.startswith("train.max_steps=")]
    args = [*short, "train.max_steps=3", "hydra/launcher=ray", "+hydra.launcher.ray.init.num_cpus=1",
            "+hydra.launcher.ray.init.include_dashboard=false", f"hydra.sweep.dir={sweep_dir}"]
    done = run_cli(args, stop_folder, RAY_USAGE_STATS_ENABLED="0")
    assert done.returncode == 0, done.explain()
    output = done.stdout + done.stderr
    assert "Started a local Ray instance" in output and "_run_job pid=" in output, done.explain()
    found = records(sweep_dir)
    assert sorted(r["labels"]["seed"] for r in found.values()) == [0, 1], sorted(found)
    assert {r["status"] for r in found.values()} == {"completed"}, {k: r["status"] for k, r in found.items()}
    manifest = json.loads((sweep_dir / "manifest.json").read_text())
    assert {c["run_dir"]: c.get("config_hash") for c in manifest["cells"]} == {
        run_dir: r["config_hash"] for run_dir, r in found.items()}
    assert (sweep_dir / "report" / "report.html").is_file(), done.explain()
    assert "sweep: 2 of 2 cells done (2 completed" in output, done.explain()
