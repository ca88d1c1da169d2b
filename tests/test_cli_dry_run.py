"""The real command line, end to end: `lora-ablate ... dry_run=true` prints the plan as
JSON; bad input exits non-zero with a message naming the bad value and no traceback.

The subprocesses start right after collection (see conftest.CLI_RUNS) and run alongside
the in-process tests; each test here only reads its result."""

import sys
from pathlib import Path

import pytest

from conftest import (
    ARCHS,
    CLI_RUNS,
    CliResult,
    arch_overrides,
    compose_run,
    finish_cli,
    plan_for,
    roberta_param_counts,
    save_config,
    start_cli,
)
from lora_ablate.errors import ConfigError

FALCON = dict(hidden_size=64, num_hidden_layers=3, num_attention_heads=4, vocab_size=260)
FALCON_MAP = "model.matrix_map={o: self_attention.dense, ffn_up: mlp.dense_h_to_4h, ffn_down: mlp.dense_4h_to_h}"


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
    }


def start_cli_runs(workdir: Path) -> dict:
    """Called once after collection: write the config folders, start every CLI case."""
    arch = ARCHS["roberta_base"]
    save_config(workdir / "roberta_base", arch.model_type, **arch.config)
    save_config(workdir / "falcon", "falcon", **FALCON)
    started = {}
    for name, overrides in _cases(workdir).items():
        if name == "roberta_qkvo":  # the console script itself, once
            script = Path(sys.executable).with_name("lora-ablate")
            proc = start_cli(overrides, workdir / name, command=[str(script)] if script.exists() else None)
        else:
            proc = start_cli(overrides, workdir / name)
        started[name] = (proc, overrides)
    return started


@pytest.fixture(scope="module")
def cli_runs(request, tmp_path_factory) -> dict[str, CliResult]:
    started = request.config.stash.get(CLI_RUNS, None)
    if started is None:  # e.g. the hook did not run: start them now
        started = start_cli_runs(tmp_path_factory.mktemp("cli"))
    return {name: finish_cli(proc, overrides, timeout=300) for name, (proc, overrides) in started.items()}


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
