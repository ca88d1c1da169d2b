"""The hub SFT presets and sweeps/sft_table5_gpu.yaml compose and dry-run offline on hub
decoder presets (their config.json saved locally in place of the hub): the plan a dry run
prints, with the task checks a dry run makes. Reading the data: test_hub_sft.py."""

import itertools

import pytest
from omegaconf import OmegaConf

from helpers import ARCHS, REPO, compose_run
from lora_ablate.plan.resolve import resolve_run

SFT_PRESETS = ["alpaca", "no_robots", "gsm8k"]
TABLE_5_AND_FFN = ["q", "k", "v", "o", "qk", "qv", "qkvo", "ffn", "qkv_ffn", "all"]


@pytest.mark.parametrize("model", ["qwen2_0_5b", "llama3_8b"])
@pytest.mark.parametrize("task", SFT_PRESETS)
def test_every_sft_preset_dry_runs_on_a_hub_decoder(task, model, arch_dirs) -> None:
    cfg = compose_run([f"model={model}", f"task={task}", f"model.name_or_path={arch_dirs[model]}", "targets=qv"])
    assert (cfg.task.source, cfg.task.format, cfg.task.metric) == ("hub", "sft", "loss")
    assert cfg.task.val_size <= 500 and cfg.task.test_size <= 500  # sized for a sweep's evaluations
    plan = resolve_run(cfg).plan  # what dry_run=true prints, after the task's config checks
    assert plan.head_params == 0 and plan.lora_params > 0  # generative: the LM head, no new head


def test_the_presets_read_what_their_data_sets_hold() -> None:
    alpaca, no_robots, gsm8k = (compose_run([f"task={name}"]).task for name in SFT_PRESETS)
    assert alpaca.hub_id == "yahma/alpaca-cleaned" and alpaca.completion_column == "output"
    assert ["{instruction}" in t for t in alpaca.prompt_templates] == [True, True]
    assert ["{input}" in t for t in alpaca.prompt_templates] == [True, False]  # rows with an empty input get the second
    assert (no_robots.hub_id, no_robots.messages_column) == ("HuggingFaceH4/no_robots", "messages")
    assert (gsm8k.hub_id, gsm8k.hub_config, gsm8k.completion_column) == ("openai/gsm8k", "main", "answer")
    assert gsm8k.answer_marker == "####" and gsm8k.max_new_tokens >= 256
    assert alpaca.max_new_tokens == no_robots.max_new_tokens == 0  # no checkable answer: no generation


def sweep_cells() -> list[dict[str, str]]:
    params = OmegaConf.load(REPO / "sweeps" / "sft_table5_gpu.yaml").hydra.sweeper.params
    grid = {key: str(values).split(",") for key, values in params.items()}
    return [dict(zip(grid, values)) for values in itertools.product(*grid.values())]


def test_the_gpu_sweep_is_table_5_plus_the_ffn_sets_over_several_seeds() -> None:
    cells = sweep_cells()
    assert [c["targets"] for c in cells if c["seed"] == "0"] == TABLE_5_AND_FFN
    assert len({c["seed"] for c in cells}) >= 3 and len(cells) == len(TABLE_5_AND_FFN) * len({c["seed"] for c in cells})


def test_seed_zero_cells_dry_run_at_one_budget(arch_dirs) -> None:
    """The fast share: every target set once (a seed does not change the plan)."""
    check_cells([c for c in sweep_cells() if c["seed"] == "0"], arch_dirs)


@pytest.mark.slow
def test_every_cell_dry_runs_at_one_budget(arch_dirs) -> None:
    check_cells(sweep_cells(), arch_dirs)


def check_cells(cells: list[dict[str, str]], arch_dirs) -> None:
    arch = ARCHS["qwen2_0_5b"]
    budget = 16 * arch.layers * (arch.size("q") + arch.size("v"))  # qv at r=16 on Qwen2-0.5B
    for cell in cells:
        cfg = compose_run(["sweep=sft_table5_gpu", *(f"{k}={v}" for k, v in cell.items()),
                           f"model.name_or_path={arch_dirs['qwen2_0_5b']}"])
        assert (cfg.model.name, cfg.task.name, cfg.task.format, cfg.sweep_name) == (
            "qwen2_0_5b", "gsm8k", "sft", "sft_table5_gpu")
        plan = resolve_run(cfg).plan
        assert plan.budget_target == budget == 1_081_344
        assert abs(plan.lora_params - budget) <= 0.01 * budget, cell
        assert plan.target_set == cell["targets"]
