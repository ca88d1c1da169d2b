"""sweeps/paper_roberta.yaml: every cell dry-runs offline (RoBERTa-base's config.json saved
locally in place of the hub) and meets the LoRA paper's 294,912-parameter budget."""

import itertools

import pytest
from omegaconf import OmegaConf

from helpers import ARCHS, REPO, compose_run
from lora_ablate.plan.resolve import resolve_run

PAPER_BUDGET = 294_912  # 12 layers × (q + v) × r=8 × (768 + 768)
TABLE_5 = {"q": 16, "k": 16, "v": 16, "o": 16, "qk": 8, "qv": 8, "qkvo": 4}  # ranks at that budget


def sweep_cells():
    params = OmegaConf.load(REPO / "sweeps" / "paper_roberta.yaml").hydra.sweeper.params
    grid = {key: str(values).split(",") for key, values in params.items()}
    return [dict(zip(grid, values)) for values in itertools.product(*grid.values())]


def test_the_grid_is_table_5_on_sst2_and_mnli_over_five_seeds():
    cells = sweep_cells()
    assert {c["task"] for c in cells} == {"sst2", "mnli"}
    assert {c["targets"] for c in cells} == set(TABLE_5)
    assert {c["seed"] for c in cells} == {"0", "1", "2", "3", "4"}
    assert len(cells) == 2 * 7 * 5


def test_seed_zero_cells_plan_the_paper_budget(arch_dirs):
    """The fast share: every task × target set (a seed does not change the plan)."""
    check_cells([c for c in sweep_cells() if c["seed"] == "0"], arch_dirs)


@pytest.mark.slow
def test_every_cell_plans_the_paper_budget(arch_dirs):
    check_cells(sweep_cells(), arch_dirs)


def check_cells(cells, arch_dirs):
    arch = ARCHS["roberta_base"]
    assert 8 * arch.layers * 2 * (arch.hidden + arch.hidden) == PAPER_BUDGET
    for cell in cells:
        cfg = compose_run(["sweep=paper_roberta", *(f"{k}={v}" for k, v in cell.items()),
                           f"model.name_or_path={arch_dirs['roberta_base']}"])
        assert (cfg.model.name, cfg.task.name, cfg.budget.kind, cfg.sweep_name) == (
            "roberta_base", cell["task"], "params", "paper_roberta")
        plan = resolve_run(cfg).plan
        total = sum(m.rank * arch.size(m.matrix) for m in plan.modules)
        assert plan.budget_target == PAPER_BUDGET
        assert plan.lora_params == total
        assert abs(total - PAPER_BUDGET) <= 0.01 * PAPER_BUDGET, cell
        assert {m.rank for m in plan.modules} == {TABLE_5[cell["targets"]]}, cell  # exact at the paper's ranks
        assert plan.head_params == (arch.hidden + 1) * arch.hidden + (arch.hidden + 1) * cfg.task.num_labels
