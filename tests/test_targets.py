"""Target sets on real architectures: exactly the expected modules, on every layer, with
the right shapes; and clear errors for names that do not exist."""

import pytest
from omegaconf import OmegaConf

from helpers import (
    ARCHS,
    CONF,
    arch_overrides,
    compose_run,
    expected_matrices,
    plan_for,
    save_config,
)
from lora_ablate.errors import ConfigError
from lora_ablate.target_sets import TARGET_SETS
from lora_ablate.plan.resolve import resolve_run


def _structure_plan(plan_cache, arch_dirs, key, option):
    """The default-budget plan; where that budget is infeasible, the budget=none plan
    (module structure does not depend on the budget)."""
    plan = plan_cache.get(arch_overrides(arch_dirs[key]), option)
    if isinstance(plan, ConfigError):
        plan = plan_cache.get(arch_overrides(arch_dirs[key], "budget=none"), option)
    assert not isinstance(plan, ConfigError), plan
    return plan


def test_conf_targets_restate_target_sets_exactly():
    """conf/targets/NAME.yaml is TARGET_SETS[NAME] for Hydra: one file per set, no other
    file, the same matrices in the same order, nothing else in it."""
    files = {path.stem: OmegaConf.to_container(OmegaConf.load(path)) for path in (CONF / "targets").glob("*.yaml")}
    assert files == {name: {"matrices": list(matrices)} for name, matrices in TARGET_SETS.items()}


@pytest.mark.parametrize("option", list(TARGET_SETS))
def test_targets_option_composes_to_its_matrices(plan_cache, option):
    assert sorted(plan_cache.option_matrices(option)) == sorted(TARGET_SETS[option])


@pytest.mark.parametrize("option", list(TARGET_SETS))
@pytest.mark.parametrize("key", list(ARCHS))
def test_exactly_the_expected_modules_on_every_layer(plan_cache, arch_dirs, key, option):
    arch = ARCHS[key]
    plan = _structure_plan(plan_cache, arch_dirs, key, option)
    wanted = expected_matrices(arch, option)

    assert plan.model_type == arch.model_type
    assert set(plan.matrices) == wanted
    assert {m.matrix for m in plan.modules} == wanted
    # one module per matrix per layer, on every layer, nothing else
    cells = sorted((m.layer, m.matrix) for m in plan.modules)
    assert cells == sorted((layer, matrix) for layer in range(arch.layers) for matrix in wanted)
    assert len({m.name for m in plan.modules}) == len(plan.modules)
    for m in plan.modules:
        assert m.name.endswith(f".{m.layer}.{arch.paths[m.matrix]}"), m.name
        assert (m.d_in, m.d_out) == arch.shape(m.matrix), (m.name, m.d_in, m.d_out)
        assert m.params == m.rank * (m.d_in + m.d_out)


@pytest.mark.parametrize("option", list(TARGET_SETS))
@pytest.mark.parametrize("key", ["bert_base", "gpt2_124m", "llama3_8b"])
def test_plan_reports_the_target_option_name(plan_cache, arch_dirs, key, option):
    plan = _structure_plan(plan_cache, arch_dirs, key, option)
    assert plan.to_dict()["target_set"] == option


@pytest.mark.parametrize("key", ["gpt2_124m", "pythia_160m", "phi3_mini", "phi3_gqa"])
def test_qv_on_fused_attention_adapts_no_key(plan_cache, arch_dirs, key):
    plan = _structure_plan(plan_cache, arch_dirs, key, "qv")
    k_path = ARCHS[key].paths["k"]
    assert not [m.name for m in plan.modules if m.name.endswith(k_path)]
    # and the unsplit fused module is never a target itself
    fused = k_path.rsplit(".", 1)[0]
    assert not [m.name for m in plan.modules if m.name.endswith(fused)]
    assert {m.matrix for m in plan.modules} == {"q", "v"}


def test_gqa_key_and_value_are_narrower_than_query(plan_cache, arch_dirs):
    plan = _structure_plan(plan_cache, arch_dirs, "llama3_8b", "qkv")
    shapes = {m.matrix: (m.d_in, m.d_out) for m in plan.modules}
    # hidden 4096, 32 heads of 128, 8 kv heads -> k, v project to 8 * 128 = 1024
    assert shapes == {"q": (4096, 4096), "k": (4096, 8 * 4096 // 32), "v": (4096, 8 * 4096 // 32)}


def test_target_list_with_ffn_and_single_matrices(plan_cache, arch_dirs):
    arch = ARCHS["llama3_8b"]
    plan = plan_for(arch_overrides(arch_dirs["llama3_8b"], "targets.matrices=[q,ffn_down]"))
    assert set(plan.matrices) == {"q", "ffn_down"}
    assert len(plan.modules) == 2 * arch.layers


# --------------------------------------------------------------------------- bad names


def test_unknown_target_name_is_a_config_error():
    with pytest.raises(ConfigError) as err:
        plan_for(["model=tiny_llama", "targets.matrices=[q,x]"])
    assert "'x'" in str(err.value)


def test_matrix_the_architecture_lacks_is_a_config_error():
    with pytest.raises(ConfigError) as err:
        plan_for(["model=tiny_gpt2", "targets.matrices=[ffn_gate]"])
    message = str(err.value)
    assert "ffn_gate" in message and "gpt2" in message


def test_empty_target_list_is_a_config_error():
    with pytest.raises(ConfigError):
        plan_for(["model=tiny_llama", "targets.matrices=[]"])


@pytest.fixture(scope="module")
def falcon_dir(tmp_path_factory):
    return save_config(tmp_path_factory.mktemp("falcon") / "falcon", "falcon", hidden_size=64,
                       num_hidden_layers=3, num_attention_heads=4, vocab_size=260)


@pytest.fixture(scope="module")
def gptj_dir(tmp_path_factory):
    return save_config(tmp_path_factory.mktemp("gptj") / "gptj", "gptj", n_embd=64, n_inner=256,
                       n_layer=3, n_head=4, vocab_size=260, rotary_dim=8, bos_token_id=1, eos_token_id=2)


def test_unknown_model_type_without_matrix_map_is_a_config_error(falcon_dir):
    with pytest.raises(ConfigError) as err:
        plan_for(arch_overrides(falcon_dir))
    assert "falcon" in str(err.value)
    assert "matrix_map" in str(err.value)


FALCON_MAP = {"o": "self_attention.dense", "ffn_up": "mlp.dense_h_to_4h", "ffn_down": "mlp.dense_4h_to_h"}
GPTJ_MAP = {"q": "attn.q_proj", "k": "attn.k_proj", "v": "attn.v_proj", "o": "attn.out_proj",
            "ffn_up": "mlp.fc_in", "ffn_down": "mlp.fc_out"}


def plan_with_map(folder, matrix_map, *extra):
    """Compose, then set model.matrix_map on the RunConfig (the planning logic alone,
    independent of how a map is written as a command-line override)."""
    cfg = compose_run(arch_overrides(folder, *extra))
    cfg.model.matrix_map = dict(matrix_map)
    return resolve_run(cfg).plan


def _check_falcon_plan(plan):
    # falcon's attention is fused (query_key_value), so the map names the separate matrices
    hidden, layers = 64, 3
    shapes = {"o": (hidden, hidden), "ffn_up": (hidden, 4 * hidden), "ffn_down": (4 * hidden, hidden)}
    assert plan.model_type == "falcon"
    assert sorted((m.layer, m.matrix) for m in plan.modules) == sorted(
        (layer, matrix) for layer in range(layers) for matrix in shapes)
    for m in plan.modules:
        assert (m.d_in, m.d_out) == shapes[m.matrix]
    assert abs(plan.lora_params - 20000) <= max(sum(s) for s in shapes.values()) / 2


def test_matrix_map_makes_an_unknown_model_type_work(falcon_dir):
    plan = plan_with_map(falcon_dir, FALCON_MAP, "targets.matrices=[o,ffn]", "budget=params", "budget.params=20000")
    _check_falcon_plan(plan)


def test_matrix_map_as_a_hydra_override(falcon_dir):
    """The override syntax the unknown-model_type error message suggests."""
    plan = plan_for(arch_overrides(
        falcon_dir, "model.matrix_map={o: self_attention.dense, ffn_up: mlp.dense_h_to_4h, ffn_down: mlp.dense_4h_to_h}",
        "targets.matrices=[o,ffn]", "budget=params", "budget.params=20000"))
    _check_falcon_plan(plan)


def test_matrix_map_with_the_default_reference_budget(gptj_dir):
    plan = plan_with_map(gptj_dir, GPTJ_MAP, "targets=all")
    hidden, inner, layers = 64, 256, 3
    assert plan.budget_target == 8 * layers * (2 * hidden + 2 * hidden)  # qv at r=8
    assert sorted((m.layer, m.matrix) for m in plan.modules) == sorted(
        (layer, matrix) for layer in range(layers) for matrix in GPTJ_MAP)
    assert {m.matrix: (m.d_in, m.d_out) for m in plan.modules}["ffn_down"] == (inner, hidden)
    assert abs(plan.lora_params - plan.budget_target) <= (inner + hidden) / 2


def test_matrix_map_naming_an_unknown_matrix_is_a_config_error(gptj_dir):
    with pytest.raises(ConfigError) as err:
        plan_with_map(gptj_dir, {"q": "attn.q_proj", "query": "attn.v_proj"})
    assert "query" in str(err.value)


def test_matrix_map_path_that_matches_nothing_is_a_config_error(gptj_dir):
    with pytest.raises(ConfigError) as err:
        plan_with_map(gptj_dir, {"q": "attn.q_proj", "v": "attn.value_proj"})
    assert "attn.value_proj" in str(err.value)
