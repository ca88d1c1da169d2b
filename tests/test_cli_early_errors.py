"""Every mistake is caught before training and before Hydra makes a folder: the command
line's entry point (`lora_ablate.app.cli.main`) is called in this process with each argv;
a mistake exits 2 with one `lora-ablate: error:` paragraph and leaves no outputs/ folder.
Also what only prints: --version, -sc install=bash, --cfg hydra --resolve."""

import csv
import json
from pathlib import Path

import pytest

from lora_ablate import __version__
from lora_ablate.app.overrides import read_command_line
from cli_helpers import call_in_process as call

TINY = ["model=tiny_bert", "train.device=cpu"]


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    """An empty working folder with a small local data file (data.csv)."""
    monkeypatch.chdir(tmp_path)
    with open(tmp_path / "data.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows([(f"review number {i} {'good' if i % 2 else 'bad'}", i % 2) for i in range(60)])
    return tmp_path


LOCAL = ["task=local", "task.path=data.csv", "task.train_size=20", "task.val_size=10", "task.test_size=10"]




def assert_one_paragraph(status: int, err: str, folder: Path, *needles: str) -> None:
    assert status == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lora-ablate: error: "), err
    for needle in needles:
        assert needle in err, err
    assert not (folder / "outputs").exists(), sorted(p.name for p in (folder / "outputs").rglob("*"))


@pytest.mark.parametrize("args, needles", [
    (["task.metric=f1"], ("task.metric='f1'", "did you mean 'macro_f1'", "accuracy, macro_f1")),
    (["report.metric=test/acc"], ("report.metric='test/acc'", "did you mean 'test/accuracy'", "report.metric")),
    (["task=local", "task.path=missing.csv"], ("task.path='missing.csv'", "does not exist")),
    (["train.device=gpu"], ("train.device='gpu'", "did you mean 'cuda'", "cuda:N")),
    (["train.schedule=cosin"], ("train.schedule='cosin'", "did you mean 'cosine'")),
    (["train.max_steps=0"], ("train.max_steps", "positive")),
])
@pytest.mark.parametrize("dry_run", [True, False])
def test_a_mistake_exits_2_before_anything_is_made(project, monkeypatch, capsys, args, needles, dry_run):
    extra = ["dry_run=true"] if dry_run else []
    status, out, err = call(monkeypatch, capsys, [*TINY, *args, *extra])
    assert_one_paragraph(status, err, project, *needles)
    assert not out.strip()


def test_cuda_on_a_machine_without_it_is_refused_before_training(project, monkeypatch, capsys):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    status, _, err = call(monkeypatch, capsys, ["model=tiny_bert", *LOCAL, "train.device=cuda"])
    assert_one_paragraph(status, err, project, "train.device=cuda", "CUDA is not available")


def test_a_gpu_number_beyond_the_machines_is_refused(project, monkeypatch, capsys):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    status, _, err = call(monkeypatch, capsys, ["model=tiny_bert", *LOCAL, "train.device=cuda:2",
                                                "train.precision=fp32", "dry_run=true"])
    assert_one_paragraph(status, err, project, "train.device=cuda:2", "2 GPU(s)")


def test_a_sweep_value_without_m_names_the_fix(project, monkeypatch, capsys):
    status, _, err = call(monkeypatch, capsys, [*TINY, "targets=qv,qk"])
    assert_one_paragraph(status, err, project, "targets=qv,qk", "add -m", "lora-ablate -m ", "sweep=NAME",
                         "key=[a,b]")


@pytest.mark.parametrize("line, needles", [
    ("format: lm", ("task.format='lm' is not valid", "auto, head, label_words")),
    ("source: lokal", ("task.source='lokal'", "did you mean 'local'")),
    ("num_labels: two", ("task.num_labels=two", "an integer")),
    ("num_labelz: 2", ("'task.num_labelz' is not a config key", "did you mean 'num_labels'")),
])
def test_a_bad_value_in_a_config_file_is_said_like_a_bad_override(project, monkeypatch, capsys, line, needles):
    """OmegaConf checks what a file sets while composing; the message is still the project's
    one paragraph, naming the key, the value, what is valid and the file."""
    (project / "task").mkdir()
    key = line.split(":")[0]
    base = {"name": "mine", "source": "local", "path": "data.csv"}
    text = "".join(f"{k}: {v}\n" for k, v in base.items() if k != key) + line + "\n"
    (project / "task" / "mine.yaml").write_text(text)
    status, _, err = call(monkeypatch, capsys, [*TINY, f"hydra.searchpath=[file://{project}]", "task=mine",
                                                "dry_run=true"])
    assert_one_paragraph(status, err, project, *needles, "task/mine.yaml")


def test_a_single_dry_run_prints_its_plan_and_makes_no_folder(project, monkeypatch, capsys):
    status, out, err = call(monkeypatch, capsys, [*TINY, *LOCAL, "targets=qkv", "dry_run=true"])
    assert status == 0, err
    plan = json.loads(out)
    assert plan["targets"] == ["q", "k", "v"] and plan["lora_params"] > 0
    assert not (project / "outputs").exists()


def test_a_sweep_checks_every_cell_before_the_first(project, monkeypatch, capsys):
    """Good cells come first; every bad cell is listed and nothing is made."""
    status, _, err = call(monkeypatch, capsys, [
        "-m", "model=tiny_bert", *LOCAL, "train.device=cpu,gpu", "report.metric=test/accuracy,test/acc",
        "dry_run=true"])
    assert status == 2, err
    assert "3 of 4 sweep cells are invalid" in err, err
    listed = [line for line in err.splitlines() if line.startswith("  - [")]
    assert len(listed) == 3 and not any("train.device=cpu,report.metric=test/accuracy," in line for line in listed)
    assert err.count("train.device='gpu' is not valid") == 2 and "report.metric='test/acc' is not" in err, err
    assert not (project / "outputs").exists()


def test_version_is_lora_ablates(project, monkeypatch, capsys):
    status, out, _ = call(monkeypatch, capsys, ["--version"])
    assert status == 0 and out.strip() == f"lora-ablate {__version__}"


def test_shell_completion_prints_a_bash_script(project, monkeypatch, capsys):
    status, out, err = call(monkeypatch, capsys, ["-sc", "install=bash"])
    assert status == 0, err
    assert "complete" in out and "lora-ablate" in out and "COMP_LINE" in out, out
    assert not (project / "outputs").exists()


@pytest.mark.parametrize("extra, sweep_dir", [([], "outputs/sweeps/adhoc/"), (["sweep=smoke"], "outputs/sweeps/smoke")])
def test_cfg_hydra_resolve_shows_the_resolved_folders(project, monkeypatch, capsys, extra, sweep_dir):
    import yaml

    status, out, err = call(monkeypatch, capsys, [*extra, "--cfg", "hydra", "--resolve"])
    assert status == 0, err
    hydra = yaml.safe_load(out)["hydra"]
    assert hydra["run"]["dir"].startswith("outputs/runs/") and "${" not in out
    assert hydra["sweep"]["dir"].startswith(sweep_dir), hydra["sweep"]
    assert not (project / "outputs").exists()


def test_commands_hydra_cannot_combine_are_one_paragraph(project, monkeypatch, capsys):
    status, _, err = call(monkeypatch, capsys, ["-m", "seed=0,1", "--cfg", "job"])
    assert_one_paragraph(status, err, project, "-m and --cfg cannot be combined")


def test_the_hydra_internals_we_rely_on_are_those_of_the_installed_hydra():
    """app/overrides.py reads the command line with Hydra's own parser and app/sweeper.py
    expands grids with Hydra's basic sweeper; both are hydra._internal, so a Hydra outside
    the pinned range must fail here, not in a user's sweep."""
    import hydra
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    assert hydra.__version__.startswith("1.3."), hydra.__version__
    command = read_command_line(["-m", "--config-dir", "extra", "seed=0,1", "train.lr=1e-3"])
    assert command.multirun and command.runs_jobs and command.overrides == ["seed=0,1", "train.lr=1e-3"]
    assert command.config_dirs == [Path("extra")]
    assert not read_command_line(["--cfg", "job"]).runs_jobs
    completion = read_command_line(["-sc", "install=bash"])
    assert completion.shell_completion and not completion.runs_jobs
    assert read_command_line(["--config-name", "other"]).custom_config
    parsed = OverridesParser.create().parse_overrides(["seed=0,1", "targets=qv,qk"])
    cells = [cell for batch in BasicSweeper.split_arguments(parsed, None) for cell in batch]
    assert sorted(map(tuple, cells)) == sorted((f"seed={s}", f"targets={t}") for s in (0, 1) for t in ("qv", "qk"))


def test_help_names_version_and_completion(project, monkeypatch, capsys):
    status, out, err = call(monkeypatch, capsys, ["--help"])
    assert status == 0, err
    assert 'eval "$(lora-ablate -sc install=bash)"' in out and "--version" in out, out
