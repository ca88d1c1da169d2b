"""Scale-out: the smoke sweep completes, with its report and every run recorded exactly
once, under the joblib (`hydra/launcher=parallel`) and `submitit_local` launchers; the
SLURM preset (`hydra/launcher=slurm`) composes without submitting anything.

Each test starts the `lora-ablate` console script with WANDB_MODE=disabled,
HF_HUB_OFFLINE=1 and the caller's LORA_ABLATE_CACHE (unset: the package default)."""

import os
from pathlib import Path

import pytest
import yaml

from cli_helpers import Done, records, run_cli

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
