"""Task sources: one module per `task.source`, found by the registry, behind one
interface; what a pinned corpus knows without data is checked before any is read; and
data/ and cache/ import nothing from the layers above them."""

import ast
from pathlib import Path

import pytest

from lora_ablate.config.schema import TaskConfig, TaskSource
from lora_ablate.data.sources import SOURCES, Source, source_for
from lora_ablate.data.sources.base import RawExamples
from lora_ablate.data.tasks import check_task_config, load_task
from lora_ablate.errors import ConfigError

SRC = Path(__file__).resolve().parents[1] / "src" / "lora_ablate"


def test_every_task_source_value_has_exactly_one_source_module() -> None:
    assert set(SOURCES) == set(TaskSource)
    assert all(isinstance(source, Source) and source.kind == kind for kind, source in SOURCES.items())
    modules = {type(source).__module__.rsplit(".", 1)[1] for source in SOURCES.values()}
    assert modules == {kind.value for kind in TaskSource}  # vader.py, bbc.py, ...


def test_an_unvalidated_unknown_source_lists_the_valid_ones() -> None:
    cfg = TaskConfig(name="t", source="vader", subset="tweets")
    cfg.source = "sft_files"  # as a config that skipped the schema's checks would hold
    with pytest.raises(ConfigError, match=r"task.source='sft_files' is not a known source; valid sources are vader, bbc, bbc_sql, local, hub, diagnostic\."):
        source_for(cfg)


@pytest.mark.parametrize(
    ("cfg", "named"),
    [
        (TaskConfig(name="rt", source="vader", subset="movieReviewSnippets", num_labels=3), "task.num_labels=3 but task 'rt' has 2 labels (negative, positive)"),
        (TaskConfig(name="bbc", source="bbc", num_labels=2), "task.num_labels=2 but task 'bbc' has 5 labels (business,"),
        (TaskConfig(name="d", source="diagnostic", subset="routing", label_names=["pos", "neg"]), "task.label_names=['pos', 'neg'] does not match the labels of the diagnostic tasks"),
    ],
    ids=["vader", "bbc", "diagnostic"],
)
def test_labels_of_a_pinned_corpus_are_checked_without_reading_it(cfg: TaskConfig, named: str, monkeypatch) -> None:
    monkeypatch.setattr(type(SOURCES[cfg.source]), "load", lambda self, c: pytest.fail("data read"))
    with pytest.raises(ConfigError) as err:
        check_task_config(cfg)
    assert named in str(err.value) and "\n" not in str(err.value)


def test_a_new_source_needs_only_its_module(monkeypatch, tmp_path) -> None:
    """What an SFT-files source would implement: load() and, optionally, the rest."""

    class Lines(Source):
        kind = TaskSource.local

        def load(self, cfg: TaskConfig) -> RawExamples:
            from lora_ablate.data.splits import Example

            examples = [Example(f"line {i}", i % 2) for i in range(30)]
            return RawExamples(["even", "odd"], examples, [Example("extra", 1)])

    monkeypatch.setitem(SOURCES, TaskSource.local, Lines())
    data = load_task(TaskConfig(name="lines", source="local", val_size=4, test_size=6))
    assert data.label_names == ["even", "odd"] and (len(data.train), len(data.validation), len(data.test)) == (21, 4, 6)
    assert data.train[-1].text == "extra"  # train-only examples come after the split


# --- layering ---------------------------------------------------------------------------

ABOVE_DATA = ("lora_ablate.run", "lora_ablate.report", "lora_ablate.plan", "lora_ablate.analysis",
              "lora_ablate.model", "lora_ablate.cli")  # fmt: skip


def imports_of(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("data", ABOVE_DATA),
        ("cache", (*ABOVE_DATA, "lora_ablate.data", "lora_ablate.config")),
    ],
)
def test_lower_packages_import_nothing_from_above(package: str, forbidden: tuple[str, ...]) -> None:
    bad = {
        f"{path.relative_to(SRC)} imports {name}"
        for path in sorted((SRC / package).rglob("*.py"))
        for name in imports_of(path)
        if name.startswith(forbidden)
    }
    assert not bad, sorted(bad)
