"""Run identity: labels, observing keys and variants from one set of rules; folder names
safe for any override value."""

from lora_ablate.identity import config_hash, run_dirname, run_key, variant

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
    assert variant(overrides) == "train.lr=0.001,train.x=1"
    key = run_key(CONFIG, "qv", overrides)
    assert key.labels.variant == "train.lr=0.001,train.x=1"
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
    assert top.labels.layers == "top" and top.labels.variant == "" and "@top" in top.run_id
