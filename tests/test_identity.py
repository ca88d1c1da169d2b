"""Run identity: labels, observing keys and variants from one set of rules; folder names
safe for any override value; hashes and folder names of existing configs never change."""

import dataclasses

import pytest
from helpers import compose_run
from omegaconf import OmegaConf

from lora_ablate.config.schema import RunConfig, TrainConfig
from lora_ablate.identity import LABEL_KEYS, OBSERVING_KEYS, config_hash, run_dirname, run_key, variant
from lora_ablate.labels import CELL, GROUP, LABELS, Labels, parse_variant, variant_text

CONFIG = {
    "model": {"name": "minilm"}, "task": {"name": "local", "path": "a.csv"},
    "targets": {"matrices": ["q", "v"], "layers": "all"},
    "budget": {"kind": "reference", "scale": 1.0}, "seed": 0,
    "train": {"lr": 0.003, "threads": None, "device": "auto", "eval_batch_size": 256},
    "logger": {"kind": "none"}, "dry_run": False, "sweep_name": "s",
}


def changed(path: str, value) -> dict:
    import copy

    config = copy.deepcopy(CONFIG)
    *parents, leaf = path.split(".")
    node = config
    for part in parents:
        node = node[part]
    node[leaf] = value
    return config


def test_observing_keys_change_neither_hash_nor_folder():
    base = config_hash(CONFIG)
    for path, value in [("logger.kind", "wandb"), ("train.threads", 1), ("train.device", "cpu"),
                        ("train.eval_batch_size", 8), ("dry_run", True), ("sweep_name", "other")]:
        assert config_hash(changed(path, value)) == base, path
    assert run_dirname(["seed=0", "targets=qv"]) == run_dirname(
        ["seed=0", "targets=qv", "logger=wandb", "train.threads=1", "+sweep=smoke", "hydra/launcher=parallel"])


def test_what_a_run_computes_changes_the_hash():
    base = config_hash(CONFIG)
    for path, value in [("train.lr", 0.01), ("seed", 1), ("task.path", "b.csv"), ("targets.layers", "top")]:
        assert config_hash(changed(path, value)) != base, path


def test_variant_holds_only_overrides_beyond_labels_and_observers():
    overrides = ["targets=qv", "seed=1", "train.lr=0.001", "logger=wandb", "+train.x=1",
                 "hydra.sweep.dir=/x", "train.threads=1", "task=local", "targets.layers=top"]
    assert variant(overrides) == {"train.lr": "0.001", "train.x": "1"}
    key = run_key(CONFIG, "qv", overrides)
    assert key.labels.variant == {"train.lr": "0.001", "train.x": "1"}
    assert key.labels.variant_text == "train.lr=0.001,train.x=1"
    assert key.run_id.endswith(",train.lr=0.001,train.x=1")


def test_folder_names_have_no_path_separators_and_stay_distinct():
    a = run_dirname(["seed=0", "task=local", "task.path=../../data.csv"])
    b = run_dirname(["seed=1", "task=local", "task.path=../../data.csv"])
    c = run_dirname(["seed=0", "task=local", "task.path=../../other.csv"])
    for name in (a, b, c):
        assert "/" not in name and "\\" not in name and not name.startswith(".")
    assert len({a, b, c}) == 3
    long = run_dirname(["seed=0", "model.name_or_path=" + "x" * 500])
    assert len(long) <= 180 and long != run_dirname(["seed=0", "model.name_or_path=" + "x" * 499])
    assert run_dirname([]) == "default"


def test_layers_are_a_label():
    top = run_key(changed("targets.layers", "top"), "qv", ["targets.layers=top"])
    assert top.labels.layers == "top" and top.labels.variant == {} and "@top" in top.run_id


def test_observing_keys_are_the_fields_the_schema_marks():
    marked = {f"train.{f.name}" for f in dataclasses.fields(TrainConfig) if f.metadata.get("observing")}
    marked |= {f.name for f in dataclasses.fields(RunConfig) if f.metadata.get("observing")}
    assert OBSERVING_KEYS == marked
    assert {"train.threads", "logger", "analysis"} <= OBSERVING_KEYS and "train.lr" not in OBSERVING_KEYS


def test_an_empty_table5_frame_has_every_group_key_but_the_task():
    import pandas as pd

    from lora_ablate.report.tables import table5_frame

    empty = table5_frame(pd.DataFrame(columns=["task", "target_set", "mean", "ci_half"]))
    assert list(empty.columns[:-2]) == [*(k for k in GROUP if k != "task"), "target_set"]
    assert "layers" in empty


def test_label_keys_groups_and_cells_come_from_the_labels_fields():
    names = [f.name for f in dataclasses.fields(Labels)]
    assert list(LABELS) == names
    assert set(GROUP) == set(names) - {"target_set", "seed"} and CELL == (*GROUP, "target_set")
    assert {"targets.layers", "budget.scale", "model.name", "seed"} <= LABEL_KEYS
    assert not LABEL_KEYS & OBSERVING_KEYS


@pytest.mark.parametrize("text", [
    "", "train.lr=0.001", "task.label_words=[' no',' yes'],train.lr=0.01",
    "targets.layers=[0,1],task.path=a/b.csv,~train.x", "model.config={a: 1, b: 2},x=y=z"])
def test_variant_text_round_trips(text):
    """Version-2 records hold the variant as text; values may hold commas."""
    assert variant_text(parse_variant(text)) == text


def test_variant_values_keep_their_commas():
    assert parse_variant("a=[1,2],b=3,~c") == {"a": "[1,2]", "b": "3", "~c": None}
    assert parse_variant("model.config={a: 1, b: 2}") == {"model.config": "{a: 1, b: 2}"}


# Computed with the code before the record became typed (main at 8762f72): a rerun of an
# existing sweep must find its completed cells under the same hash and folder.
PINNED = [
    ([],
     "f62e26cc92adcd37", "default",
     "model=minilm,task=rt_sentiment,targets=qv,budget=reference,seed=0"),
    (["model=minilm", "task=rt_sentiment", "targets=qv", "budget=reference", "seed=0"],
     "f62e26cc92adcd37", "budget=reference,model=minilm,seed=0,targets=qv,task=rt_sentiment",
     "model=minilm,task=rt_sentiment,targets=qv,budget=reference,seed=0"),
    # the sweep file's v0.2 protocol (100 steps, validation every 25) given on the command line
    (["sweep=qv_vs_others", "targets=qkv_ffn", "seed=4", "task=tweets_sentiment", "train.max_steps=100",
      "train.eval_every=25"],
     "a53b41caac68a1e2", "seed=4,targets=qkv_ffn,task=tweets_sentiment,train.eval_every=25,train.max_steps=100",
     "model=minilm,task=tweets_sentiment,targets=qkv_ffn,budget=reference,seed=4,train.eval_every=25,train.max_steps=100"),
    (["model=tiny_llama", "targets=all", "budget=params", "budget.params=20000", "budget.scale=0.5", "seed=1"],
     "377b4d1777f23885", "budget.params=20000,budget.scale=0.5,budget=params,model=tiny_llama,seed=1,targets=all",
     "model=tiny_llama,task=rt_sentiment,targets=all,budget=paramsx0.5,seed=1,budget.params=20000"),
    (["model=tiny_gpt2", "targets=ffn", "targets.layers=top", "train.lr=0.001", "seed=2", "logger=wandb",
      "train.threads=1"],
     "cec4c975e69b6b78", "model=tiny_gpt2,seed=2,targets.layers=top,targets=ffn,train.lr=0.001",
     "model=tiny_gpt2,task=rt_sentiment,targets=ffn@top,budget=reference,seed=2,train.lr=0.001"),
    (["model=tiny_bert", "targets.matrices=[q,v,ffn_down]", "targets.layers=[0,1]", "budget=none", "lora.rank=4",
      "train.max_steps=50"],
     "270ca06aa6af00da",
     "budget=none,lora.rank=4,model=tiny_bert,targets.layers=[0,1],targets.matrices=[q,v,ffn_down],train.max_steps=50",
     "model=tiny_bert,task=rt_sentiment,targets=q+v+ffn_down@[0,1],budget=none,seed=0,lora.rank=4,train.max_steps=50"),
]


@pytest.mark.parametrize("overrides, expected_hash, folder, run_id", PINNED, ids=lambda v: None)
def test_hashes_folders_and_ids_of_existing_configs_are_unchanged(overrides, expected_hash, folder, run_id):
    from lora_ablate.plan.resolve import resolve_run

    cfg = compose_run(overrides)
    config = OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True, enum_to_str=True)
    key = run_key(config, resolve_run(cfg).plan.target_set, overrides)
    assert (key.config_hash, run_dirname(overrides), key.run_id) == (expected_hash, folder, run_id)


def test_a_setting_added_later_is_hashed_only_when_set():
    """task.prompt_column came with SFT: at its default it leaves the hash of every earlier
    cell as it was (the pinned cases above), and set to another value it makes a new cell."""
    from lora_ablate.identity import ADDED_DEFAULTS, config_hash

    assert ADDED_DEFAULTS["task.prompt_column"] == "prompt"
    config = OmegaConf.to_container(OmegaConf.structured(compose_run([])), resolve=True, enum_to_str=True)
    without = {**config, "task": {k: v for k, v in config["task"].items()
                                  if k not in ("prompt_column", "completion_column", "messages_column")}}
    assert config_hash(config) == config_hash(without)
    changed = {**config, "task": {**config["task"], "prompt_column": "question"}}
    assert config_hash(changed) != config_hash(config)
