"""`targets.layers`: bands, indices and ranges select layers; the same budget is spread
over the selected modules only; bad values are ConfigErrors naming the value and range."""

import pytest
from cli_helpers import run_cli
from helpers import ARCHS, arch_overrides, compose_run, plan_for

from lora_ablate.errors import ConfigError
from lora_ablate.plan.layers import band_layers


@pytest.mark.parametrize("count", range(1, 41))
def test_bands_are_thirds_with_the_remainder_on_top_then_bottom(count):
    third = count // 3
    sizes = {"bottom": third + (count % 3 == 2), "middle": third, "top": third + (count % 3 >= 1)}
    bands = {band: band_layers(band, count) for band in sizes}
    assert bands["bottom"] + bands["middle"] + bands["top"] == list(range(count))
    assert {band: len(layers) for band, layers in bands.items()} == sizes


def test_top_band_on_tiny_llama_from_the_command_line(tmp_path):
    """The brief's example: only the top third (layer 1 of 2), budget within 1 %."""
    result = run_cli(["model=tiny_llama", "targets=qv", "targets.layers=top", "dry_run=true"], tmp_path)
    plan = result.plan()
    assert {m["layer"] for m in plan["modules"]} == {1}
    assert plan["layers"] == [1]
    # tiny_llama: hidden 64, 4 heads of 16, 2 kv heads -> v projects to 32; 2 layers; qv at r=8
    budget = 8 * 2 * ((64 + 64) + (64 + 32))
    total = sum(m["rank"] * {"q": 64 + 64, "v": 64 + 32}[m["matrix"]] for m in plan["modules"])
    assert plan["budget"]["target"] == budget
    assert plan["lora_params"] == total
    assert abs(total - budget) <= 0.01 * budget


@pytest.mark.parametrize(
    "layers, expected",
    [
        ("bottom", range(0, 11)),
        ("middle", range(11, 21)),
        ("top", range(21, 32)),
        ("all", range(32)),
        ("[0,5,31]", [0, 5, 31]),
        ("0-3", range(0, 4)),
        ("7", [7]),
        ("[0-3,8]", [0, 1, 2, 3, 8]),
    ],
)
def test_layers_select_modules_and_keep_the_budget(plan_cache, arch_dirs, layers, expected):
    arch = ARCHS["llama3_8b"]
    plan = plan_cache.get(arch_overrides(arch_dirs["llama3_8b"], f"targets.layers={layers}"), "qkv_ffn")
    assert not isinstance(plan, ConfigError), plan
    wanted = {(layer, m) for layer in expected for m in ("q", "k", "v", "ffn_gate", "ffn_up", "ffn_down")}
    assert {(m.layer, m.matrix) for m in plan.modules} == wanted
    assert plan.to_dict()["layers"] == list(expected)
    budget = 8 * arch.layers * (arch.size("q") + arch.size("v"))  # the same budget on fewer modules
    total = sum(m.rank * arch.size(m.matrix) for m in plan.modules)
    assert plan.budget_target == budget and plan.lora_params == total
    assert abs(total - budget) <= 0.01 * budget


@pytest.mark.parametrize(
    "value, shown",
    [("40", "40"), ("[0,32]", "32"), ("0-40", "40"), ("upper", "upper"), ("-1", "-1"), ("5-2", "5-2"), ("[]", "empty")],
)
def test_bad_layers_are_config_errors_naming_value_and_range(plan_cache, arch_dirs, value, shown):
    plan = plan_cache.get(arch_overrides(arch_dirs["llama3_8b"], f"targets.layers={value}"), "qv")
    assert isinstance(plan, ConfigError), plan
    message = str(plan)
    assert shown in message and "0..31" in message and "bottom" in message, message


def test_empty_band_on_a_two_layer_model_is_a_config_error():
    with pytest.raises(ConfigError) as err:
        plan_for(["model=tiny_llama", "targets.layers=middle"])
    assert "middle" in str(err.value) and "2 layers" in str(err.value)


def test_depth_sweep_cells_plan_on_a_minilm_shape(tmp_path):
    """Every cell of sweeps/depth.yaml, with MiniLM's shape (6 BERT layers, hidden 384)
    from a saved config.json instead of the packaged weights."""
    from conftest import save_config

    folder = save_config(tmp_path / "minilm", "bert", hidden_size=384, intermediate_size=1536,
                         num_hidden_layers=6, num_attention_heads=12, vocab_size=30522)
    sizes = {"q": 768, "v": 768, "ffn_up": 384 + 1536, "ffn_down": 1536 + 384}
    budget = 8 * 6 * (768 + 768)
    bands = {"bottom": [0, 1], "middle": [2, 3], "top": [4, 5], "all": list(range(6))}
    for targets in ("qv", "ffn"):
        for band, layers in bands.items():
            cfg = compose_run(["sweep=depth", f"targets={targets}", f"targets.layers={band}", "model.package=null",
                               f"model.name_or_path={folder}"])
            assert (cfg.sweep_name, cfg.train.max_steps, cfg.train.eval_every) == ("depth", 100, 25)
            from lora_ablate.plan.resolve import resolve_run

            plan = resolve_run(cfg).plan
            assert {m.layer for m in plan.modules} == set(layers)
            total = sum(m.rank * sizes[m.matrix] for m in plan.modules)
            assert plan.lora_params == total
            # as close as base/base+1 ranks get: half the largest module; within 1 % for qv. FFN on
            # two layers has 4 modules of 1,920 (2.6 % of the budget each): the best is -1.04 %.
            assert 2 * abs(total - budget) <= max(sizes[m.matrix] for m in plan.modules), (targets, band, total)
            if targets == "qv":
                assert abs(total - budget) <= 0.01 * budget, (targets, band, total)
