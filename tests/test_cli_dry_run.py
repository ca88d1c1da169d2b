"""The real command line, end to end: `lora-ablate ... dry_run=true` prints the plan as
JSON; bad input exits 2 with one `lora-ablate: error:` paragraph naming the bad value and
no traceback; `-m` sweeps (glob, ad-hoc folders, sweep files) plan every cell and write
their manifest; `--help` describes the tool.

Every command starts at once in the module fixture (through cli_helpers) and runs
alongside the others; each test only reads its result."""

import json
import re
from pathlib import Path

import pytest

from cli_helpers import Done, finish, start
from helpers import (
    ARCHS,
    arch_overrides,
    compose_run,
    expected_matrices,
    plan_for,
    roberta_param_counts,
    save_config,
)
from lora_ablate.errors import ConfigError
from lora_ablate.identity import run_dirname

FALCON = dict(hidden_size=64, num_hidden_layers=3, num_attention_heads=4, vocab_size=260)
FALCON_MAP = "model.matrix_map={o: self_attention.dense, ffn_up: mlp.dense_h_to_4h, ffn_down: mlp.dense_4h_to_h}"
GLOB_Q = ["q", "qk", "qkv", "qkv_ffn", "qkvo", "qv"]  # the targets options that match q*, by hand


def _cases(workdir: Path) -> dict[str, list[str]]:
    roberta, falcon = workdir / "roberta_base", workdir / "falcon"
    return {
        "roberta_qkvo": [*arch_overrides(roberta, "targets=qkvo"), "dry_run=true"],
        "unknown_matrix": ["model=tiny_llama", "targets.matrices=[q,x]", "dry_run=true"],
        "unknown_option": ["model=tiny_llama", "targets=qz", "dry_run=true"],
        "misspelled_key": ["model=tiny_llama", "train.max_stepz=3", "dry_run=true"],
        "unknown_model_type": [*arch_overrides(falcon), "dry_run=true"],
        "matrix_map": [*arch_overrides(falcon, FALCON_MAP, "targets.matrices=[o,ffn]", "budget=params",
                                       "budget.params=20000"), "dry_run=true"],
        "negative_steps": ["train.max_steps=-5", "dry_run=true"],
        "lr_not_a_number": ["train.lr=abc"],
        "misspelled_schedule": ["train.schedule=cosin"],
        "glob_sweep": ["-m", "targets=glob(q*)", f"model.name_or_path={roberta}", "model=custom", "dry_run=true"],
        "adhoc_sweep": ["-m", "seed=0,1", f"model.name_or_path={roberta}", "model=custom", "dry_run=true"],
        "sweep_file": ["sweep=smoke", "hydra.sweeper.params.seed=0", f"model.name_or_path={roberta}", "model=custom",
                       "dry_run=true"],
        "help": ["--help"],
        "missing_m": ["model=tiny_llama", "targets=qv,qk"],
        "unknown_metric": ["model=tiny_llama", "task.metric=f1", "dry_run=true"],
        "completion": ["-sc", "install=bash"],
        "version": ["--version"],
    }


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """One project folder: the config folders, and every command's outputs/."""
    root = tmp_path_factory.mktemp("cli")
    arch = ARCHS["roberta_base"]
    save_config(root / "roberta_base", arch.model_type, **arch.config)
    save_config(root / "falcon", "falcon", **FALCON)
    return root


@pytest.fixture(scope="module")
def cli_runs(workdir) -> dict[str, Done]:
    started = {name: (start(args, workdir), args) for name, args in _cases(workdir).items()}
    return {name: finish(proc, args, timeout=600) for name, (proc, args) in started.items()}


def test_dry_run_prints_the_plan_as_json(cli_runs):
    arch = ARCHS["roberta_base"]
    plan = cli_runs["roberta_qkvo"].plan()
    for key in ("model_type", "targets", "budget", "modules", "lora_params", "head_params", "base_params"):
        assert key in plan, key
    assert plan["model_type"] == "roberta"
    assert plan["targets"] == ["q", "k", "v", "o"]
    budget = 8 * arch.layers * 2 * (arch.hidden + arch.hidden)  # q, v at r=8
    assert budget == 294_912
    assert plan["budget"] == {**plan["budget"], "target": budget, "actual": budget, "deviation": 0}
    assert plan["lora_params"] == budget
    assert len(plan["modules"]) == 4 * arch.layers
    for module in plan["modules"]:
        assert set(module) >= {"name", "matrix", "layer", "d_in", "d_out", "rank", "params"}
        assert (module["d_in"], module["d_out"], module["rank"]) == (768, 768, 4)
        assert module["params"] == 4 * (768 + 768)
    assert sorted((m["layer"], m["matrix"]) for m in plan["modules"]) == sorted(
        (layer, m) for layer in range(arch.layers) for m in "qkvo")
    base, head = roberta_param_counts(arch, compose_run([]).task.num_labels)
    assert (plan["base_params"], plan["head_params"]) == (base, head)


def error_lines(result: Done) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("lora-ablate: error:")]


@pytest.mark.parametrize("case, needles", [
    ("negative_steps", ("train.max_steps", "-5", "positive")),
    ("lr_not_a_number", ("train.lr", "abc", "a number")),
    ("misspelled_schedule", ("train.schedule", "cosin", "did you mean 'cosine'", "linear, cosine, constant")),
])
def test_bad_value_exits_2_with_one_error_paragraph(cli_runs, case, needles):
    result = cli_runs[case]
    assert result.returncode == 2, result.explain()
    assert len(error_lines(result)) == 1 and result.stderr.strip() == error_lines(result)[0], result.explain()
    for needle in needles:
        assert needle in result.stderr, result.explain()
    assert not result.stdout.strip()


@pytest.mark.parametrize("case, needles", [
    ("missing_m", ("targets=qv,qk", "add -m", "sweep=NAME")),
    ("unknown_metric", ("task.metric='f1'", "did you mean 'macro_f1'")),
])
def test_mistakes_found_before_training_exit_2_with_one_paragraph(cli_runs, case, needles):
    test_bad_value_exits_2_with_one_error_paragraph(cli_runs, case, needles)


def test_completion_and_version_are_lora_ablates(cli_runs):
    completion, version = cli_runs["completion"], cli_runs["version"]
    assert completion.returncode == 0 and "complete" in completion.stdout and "lora-ablate" in completion.stdout, (
        completion.explain())
    assert version.returncode == 0 and version.stdout.strip().startswith("lora-ablate "), version.explain()


def test_single_dry_runs_and_early_errors_make_no_run_folder(cli_runs, workdir):
    """Every single-run case here is a dry run, an error or a print; only sweeps make folders."""
    assert cli_runs["roberta_qkvo"].returncode == 0 and cli_runs["negative_steps"].returncode == 2
    runs = workdir / "outputs" / "runs"
    assert not runs.exists(), sorted(str(p.relative_to(runs)) for p in runs.iterdir())


def sweep_dirs(workdir: Path) -> list[Path]:
    return sorted(p.parent for p in (workdir / "outputs" / "sweeps").rglob("manifest.json"))


def manifest_of(workdir: Path, args: list[str]) -> tuple[Path, dict]:
    """The sweep folder and manifest whose command-line overrides are `args` (less -m)."""
    for folder in sweep_dirs(workdir):
        manifest = json.loads((folder / "manifest.json").read_text())
        if manifest["overrides"] == [a for a in args if a != "-m"]:
            return folder, manifest
    raise AssertionError(f"no manifest for {args} among {sweep_dirs(workdir)}")


def plans(result: Done) -> list[dict]:
    """The JSON plans a dry-run sweep printed, one per cell."""
    assert result.returncode == 0, result.explain()
    decoder, text, out = json.JSONDecoder(), result.stdout, []
    for match in re.finditer(r"^\{", text, re.MULTILINE):
        out.append(decoder.raw_decode(text[match.start():])[0])
    return out


def test_glob_sweep_plans_every_matching_target_set(cli_runs, workdir):
    result = cli_runs["glob_sweep"]
    found = plans(result)
    roberta = ARCHS["roberta_base"]
    assert sorted(sorted(p["targets"]) for p in found) == sorted(
        sorted(expected_matrices(roberta, t)) for t in GLOB_Q), result.stdout[:2000]
    assert "ERROR" not in result.stderr and "Traceback" not in result.stderr, result.explain()
    folder, manifest = manifest_of(workdir, _cases(workdir)["glob_sweep"])
    assert folder.parent.name == "adhoc" and re.fullmatch(r"\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d(_\d+)?", folder.name)
    assert manifest["sweep_name"] is None
    cells = manifest["cells"]
    assert sorted(c["overrides"][0] for c in cells) == [f"targets={t}" for t in GLOB_Q]
    for cell in cells:  # named as hydra.sweep.subdir names the folder Hydra made
        assert cell["run_dir"] == run_dirname(cell["overrides"]) and (folder / cell["run_dir"]).is_dir(), cell
    assert not (folder / "report").exists()


def test_two_adhoc_sweeps_get_two_folders(cli_runs, workdir):
    for name in ("glob_sweep", "adhoc_sweep"):
        assert cli_runs[name].returncode == 0, cli_runs[name].explain()
    first, _ = manifest_of(workdir, _cases(workdir)["glob_sweep"])
    second, manifest = manifest_of(workdir, _cases(workdir)["adhoc_sweep"])
    assert first != second and first.parent == second.parent == workdir / "outputs" / "sweeps" / "adhoc"
    assert len(plans(cli_runs["adhoc_sweep"])) == len(manifest["cells"]) == 2


def test_sweep_file_without_plus_runs_the_sweep(cli_runs, workdir):
    """`sweep=smoke` (no +): the file's grid (2 target sets; seeds cut to 0) in outputs/sweeps/smoke."""
    result = cli_runs["sweep_file"]
    found = plans(result)
    roberta = ARCHS["roberta_base"]
    assert sorted(sorted(p["targets"]) for p in found) == sorted(
        sorted(expected_matrices(roberta, t)) for t in ("qv", "qkv_ffn")), result.explain()
    manifest = json.loads((workdir / "outputs" / "sweeps" / "smoke" / "manifest.json").read_text())
    assert manifest["sweep_name"] == "smoke" and len(manifest["cells"]) == 2


def test_help_describes_the_tool_its_groups_and_examples(cli_runs):
    result = cli_runs["help"]
    assert result.returncode == 0, result.explain()
    text = result.stdout
    assert "powered by Hydra" not in text
    assert "budget-matched LoRA" in text
    repo = Path(__file__).resolve().parents[1]
    for group in ("model", "task", "targets", "budget", "logger"):
        options = sorted(p.stem for p in (repo / "conf" / group).glob("*.yaml"))
        assert re.search(rf"^{group}: {re.escape(', '.join(options))}$", text, re.MULTILINE), (group, text)
    sweeps = sorted(p.stem for p in (repo / "sweeps").glob("*.yaml"))
    assert re.search(rf"^sweep: {re.escape(', '.join(sweeps))}$", text, re.MULTILINE), text
    examples = [line.strip() for line in text.splitlines() if line.strip().startswith(("lora-ablate ", "lora-ablate-report "))]
    assert any(" -m " in e or "sweep=" in e for e in examples) and any("dry_run" not in e and "-m" not in e
                                                                         and "sweep=" not in e and "report" not in e
                                                                         for e in examples)
    assert any(e.startswith("lora-ablate-report ") for e in examples), examples


@pytest.mark.parametrize(
    "case, bad_value",
    [
        ("unknown_matrix", "'x'"),
        ("unknown_option", "qz"),
        ("misspelled_key", "max_stepz"),
        ("unknown_model_type", "falcon"),
    ],
)
def test_bad_input_exits_non_zero_naming_the_value(cli_runs, case, bad_value):
    result = cli_runs[case]
    assert result.returncode != 0
    assert bad_value in result.stderr, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert not result.stdout.strip().startswith("{"), "no plan on stdout"


def test_matrix_map_on_the_command_line_makes_an_unknown_type_work(cli_runs):
    """The syntax the unknown-model_type error message suggests."""
    result = cli_runs["matrix_map"]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    plan = result.plan()
    assert plan["model_type"] == "falcon"
    hidden, layers = FALCON["hidden_size"], FALCON["num_hidden_layers"]
    sizes = {"o": 2 * hidden, "ffn_up": 5 * hidden, "ffn_down": 5 * hidden}
    assert sorted((m["layer"], m["matrix"]) for m in plan["modules"]) == sorted(
        (layer, m) for layer in range(layers) for m in sizes)
    assert 2 * abs(plan["lora_params"] - 20000) <= max(sizes.values())


# --------------------------------------------------------------------------- model input (API)


def test_missing_model_folder_is_a_config_error(tmp_path):
    missing = tmp_path / "no_such_model"
    with pytest.raises(ConfigError) as err:
        plan_for(arch_overrides(missing))
    assert str(missing) in str(err.value)


def test_folder_without_config_json_is_a_config_error(tmp_path):
    empty = tmp_path / "empty_model"
    empty.mkdir()
    (empty / "README.md").write_text("no config here")
    with pytest.raises(ConfigError) as err:
        plan_for(arch_overrides(empty))
    assert str(empty) in str(err.value) and "config.json" in str(err.value)


def test_custom_model_without_a_path_is_a_config_error():
    with pytest.raises(ConfigError) as err:
        plan_for(["model=custom"])
    assert "model.name_or_path" in str(err.value)


@pytest.mark.parametrize("model_type, kwargs", [
    ("falcon", FALCON),
    ("mpt", dict(d_model=64, n_layers=2, n_heads=4, vocab_size=260)),
])
def test_unknown_model_type_is_a_config_error(tmp_path, model_type, kwargs):
    folder = save_config(tmp_path / model_type, model_type, **kwargs)
    with pytest.raises(ConfigError) as err:
        plan_for(arch_overrides(folder))
    assert f"'{model_type}'" in str(err.value) and "matrix_map" in str(err.value)
