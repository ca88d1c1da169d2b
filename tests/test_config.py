"""The typed schema, the override check and the sweep's manifest and report settings,
in process (no subprocess): what the command line relies on before anything runs."""

import json
import re
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from omegaconf.errors import ValidationError

from helpers import CONF, compose_run
from lora_ablate.app.callbacks import ReportCallback
from lora_ablate.app.overrides import CommandLine, check_overrides, read_command_line
from lora_ablate.app.store import sweep_dirname
from lora_ablate.config.metrics import CLASSIFICATION_METRICS, SFT_METRICS
from lora_ablate.app.sweeper import write_manifest
from lora_ablate.config.schema import (RECORDED_METRICS, BudgetConfig, LoraSettings, Metric, ReportConfig, RunConfig,
                                       Schedule, TrainConfig)
from lora_ablate.errors import ConfigError
from lora_ablate.identity import run_dirname


def problem(*overrides: str) -> str | None:
    try:
        check_overrides(CommandLine(list(overrides)))
    except ConfigError as err:
        return str(err)
    return None


# --- the schema --------------------------------------------------------------------


def test_closed_choices_compose_to_enums_that_equal_their_names():
    cfg = compose_run(["train.schedule=cosine", "train.precision=bf16", "budget=params", "budget.params=1000"])
    assert cfg.train.schedule is Schedule.cosine and cfg.train.schedule == "cosine" and f"{cfg.train.schedule}" == "cosine"
    assert cfg.train.precision == "bf16" and cfg.budget.kind == "params" and cfg.logger.kind == "none"
    assert cfg.report == ReportConfig(baseline=None, metric=None, tune=[], confidence=0.95)
    plain = OmegaConf.to_container(OmegaConf.structured(cfg), enum_to_str=True)
    assert json.loads(json.dumps(plain))["train"]["schedule"] == "cosine"


@pytest.mark.parametrize("override, needles", [
    ("train.schedule=cosin", ("train.schedule='cosin'", "did you mean 'cosine'", "linear, cosine, constant")),
    ("train.precision=fp16", ("train.precision='fp16'", "auto, fp32, bf16")),
    ("budget.kind=param", ("budget.kind='param'", "did you mean 'params'", "reference, params, none")),
    ("logger.mode=offlne", ("logger.mode='offlne'", "did you mean 'offline'")),
    ("task.source=huggingface", ("task.source='huggingface'", "vader, bbc, bbc_sql, local, hub, diagnostic")),
    ("task.format=lm", ("task.format='lm'", "auto, head, label_words")),
    ("task.metric=f1", ("task.metric='f1'", "accuracy, macro_f1")),
    ("task.metric=acuracy", ("did you mean 'accuracy'",)),
])
def test_closed_choices_are_checked_once_against_the_enum(override, needles):
    """The schema's Enums are the one list: the override check names the bad value, a close
    match and the valid ones, and OmegaConf refuses the value where it comes from a file."""
    message = problem(override)
    for needle in needles:
        assert needle in message, message
    key, value = override.split("=")
    with pytest.raises(ValidationError, match=value):
        OmegaConf.merge(OmegaConf.structured(RunConfig), OmegaConf.from_dotlist([override]))


@pytest.mark.parametrize("make, needles", [
    (lambda: TrainConfig(max_steps=-5), ("train.max_steps", "-5", "positive")),
    (lambda: TrainConfig(lr=0.0), ("train.lr", "positive")),
    (lambda: TrainConfig(lr=float("nan")), ("train.lr", "nan")),
    (lambda: TrainConfig(warmup_ratio=1.0), ("train.warmup_ratio", "[0, 1)")),
    (lambda: TrainConfig(grad_clip=-1), ("train.grad_clip", ">= 0")),
    (lambda: BudgetConfig(kind="params"), ("budget.params", "positive", "None")),
    (lambda: BudgetConfig(scale=0), ("budget.scale", "positive")),
    (lambda: LoraSettings(rank=0), ("lora.rank", "positive")),
    (lambda: ReportConfig(confidence=95), ("report.confidence", "between 0 and 1")),
    (lambda: ReportConfig(metric="test/acc"), ("report.metric='test/acc'", "did you mean 'test/accuracy'",
                                               "test/macro_f1", "val/loss")),
    (lambda: ReportConfig(metric="accuracy"), ("report.metric='accuracy'", "did you mean 'val/accuracy'")),
    (lambda: TrainConfig(device="gpu"), ("train.device='gpu'", "did you mean 'cuda'", "cuda:N", "mps")),
    (lambda: TrainConfig(device="cuda:one"), ("train.device='cuda:one'", "auto", "cpu")),
])
def test_schema_rejects_bad_values_naming_them_and_what_is_valid(make, needles):
    with pytest.raises(ConfigError) as err:
        make()
    for needle in needles:
        assert needle in str(err.value), str(err.value)


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:0", "cuda:12", "mps"])
def test_device_forms_the_schema_accepts(device):
    assert TrainConfig(device=device).device == device


def test_report_metric_names_what_a_run_records():
    """The names the schema accepts are the names evaluation writes into a record."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from lora_ablate.data.sft import SftEncoded
    from lora_ablate.run.metrics import classification_metrics
    from lora_ablate.run.sft_eval import evaluate_sft

    made = classification_metrics(torch.tensor([0, 1, 1]), torch.tensor([0, 1, 0]), num_labels=2)
    lm = LlamaForCausalLM(LlamaConfig(vocab_size=16, hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                                      num_attention_heads=2, num_key_value_heads=2))
    from lora_ablate.model.loading import byte_tokenizer
    from lora_ablate.run.loop import Session, evaluate
    from lora_ablate.run.sft_generate import GenerationSettings

    items = [SftEncoded([1, 5, 6, 2], 2)]
    sft_made, _ = evaluate_sft(lm, items, pad_id=0, device=torch.device("cpu"),
                               autocast_dtype=None, max_tokens=64, max_rows=8)
    session = Session(lm, "sft", 2, 0, torch.device("cpu"), None, items, items, items, tokenizer=byte_tokenizer(),
                      generation=GenerationSettings(max_new_tokens=2))  # a task with a checkable answer
    generated = evaluate(session, items, "val", generate=True).metrics
    assert set(sft_made) < {m.split("/")[1] for m in generated}
    sft_made = {m.split("/")[1] for m in generated}
    assert set(CLASSIFICATION_METRICS) <= set(made) and set(SFT_METRICS) <= set(sft_made)
    assert set(Metric) == set(CLASSIFICATION_METRICS) | set(SFT_METRICS)
    assert set(made) | {"loss"} | set(sft_made) == {m.split("/")[1] for m in RECORDED_METRICS}
    assert all(ReportConfig(metric=m).metric == m for m in RECORDED_METRICS)


def test_every_problem_of_a_section_is_in_one_paragraph():
    with pytest.raises(ConfigError) as err:
        TrainConfig(batch_size=0, lr=-1)
    message = str(err.value)
    assert "train.batch_size" in message and "train.lr" in message and "\n" not in message


def test_composed_config_is_checked_by_to_object():
    """OmegaConf.to_object runs __post_init__: the one check for runs, dry runs and sweep cells."""
    with pytest.raises(ConfigError, match="train.max_steps"):
        compose_run(["train.max_steps=0"])


def test_train_files_set_only_what_differs_from_the_schema():
    """TrainConfig holds the training defaults; a conf/train file that restated one would be
    its second home, free to drift from it."""
    schema = TrainConfig()
    for path in sorted((CONF / "train").glob("*.yaml")):
        written = OmegaConf.load(path)
        merged = OmegaConf.merge(OmegaConf.structured(TrainConfig), written)
        restated = [key for key in written if merged[key] == getattr(schema, key)]
        assert not restated, f"conf/train/{path.name} restates TrainConfig's defaults of {restated}"


# --- the override check (Hydra's parser) -------------------------------------------


@pytest.mark.parametrize("overrides", [
    ["targets=glob(q*)"], ["targets=glob(*,exclude=[all,ffn])"], ["targets=sort(qv,qk,v)"], ["seed=range(0,5)"],
    ["train.lr=choice(1e-3,3e-3)"], ["train.lr=interval(1e-4,1e-2)"], ["train.lr=tag(lr,choice(1e-3,1e-2))"],
    ["seed=shuffle(range(3))"], ["targets.matrices=[q,v,ffn_down]"], ["train.lr=${oc.env:LR,0.003}"],
    ["model.config={model_type: bert, hidden_size: 64}"], ["~report.metric"], ["sweep=smoke"],
    ["hydra/launcher=parallel", "hydra.sweep.dir=/tmp/x"], ["task.label_names=null"], ["train.epochs=1.5"],
    ["report.tune=[train.lr]", "report.baseline=qk"], ["model=tiny_bert", "task=local", "task.path='a b.csv'"],
])
def test_valid_hydra_overrides_pass(overrides):
    assert problem(*overrides) is None


@pytest.mark.parametrize("overrides, needles", [
    (["train.lr=abc"], ("train.lr=abc", "a number")),
    (["train.lr=1e-3,abc"], ("train.lr=abc",)),
    (["seed=x"], ("seed=x", "an integer")),
    (["dry_run=maybe"], ("dry_run=maybe", "true or false")),
    (["train.schedule=cosin"], ("did you mean 'cosine'",)),
    (["train.max_stepz=3"], ("max_stepz", "did you mean 'max_steps'")),
    (["targets=qz"], ("targets=qz", "qkv_ffn")),
    (["targets=qv,qz"], ("targets=qz",)),
    (["sweep=smok"], ("sweep=smok", "did you mean 'smoke'")),
    (["+train.lr=1"], ("train.lr", "already")),
    (["x=("], ("x=(",)),
])
def test_bad_overrides_are_named_with_what_is_valid(overrides, needles):
    message = problem(*overrides)
    assert message is not None
    for needle in needles:
        assert needle in message, message


def test_groups_of_a_users_searchpath_are_accepted(tmp_path):
    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / "mine.yaml").write_text("# @package _global_\nseed: 3\n")
    (tmp_path / "targets").mkdir()
    (tmp_path / "targets" / "qo.yaml").write_text("matrices: [q, o]\n")
    searchpath = f"hydra.searchpath=[file://{tmp_path}]"
    assert problem(searchpath, "+experiment=mine", "targets=qo") is None
    assert "targets=nope" in problem(searchpath, "targets=nope")
    assert problem("hydra.searchpath=[pkg://somewhere.conf]", "+experiment=theirs", "targets=theirs") is None
    assert problem("targets=qo") is not None  # not without the searchpath
    assert "experiment" in check_or_message(read_command_line(["+experiment=mine"]))


def check_or_message(command: CommandLine) -> str:
    try:
        check_overrides(command)
    except ConfigError as err:
        return str(err)
    return ""


def test_custom_config_name_is_not_checked():
    assert read_command_line(["--config-name", "other", "anything=1"]).custom_config
    assert check_or_message(read_command_line(["--config-name", "other", "anything=1"])) == ""


# --- sweep folder, manifest, report settings ----------------------------------------


def test_adhoc_sweep_folder_is_time_stamped_and_a_named_sweep_keeps_its_name():
    assert re.fullmatch(r"adhoc/\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d", sweep_dirname(None))
    assert sweep_dirname("smoke") == "smoke"


def test_manifest_lists_cells_with_their_folders_and_merges_on_rerun(tmp_path):
    first = [["targets=qv", "seed=0"], ["targets=qk", "seed=0"]]
    write_manifest(tmp_path, "s", ["-m", "targets=qv,qk"], first)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["sweep_name"] == "s" and manifest["overrides"] == ["-m", "targets=qv,qk"]
    assert [c["run_dir"] for c in manifest["cells"]] == ["seed=0,targets=qv", "seed=0,targets=qk"]
    write_manifest(tmp_path, "s", ["targets=qv", "seed=0,1"], [["targets=qv", "seed=0"], ["targets=qv", "seed=1"]])
    merged = json.loads((tmp_path / "manifest.json").read_text())
    assert merged["created"] == manifest["created"]
    assert sorted(c["run_dir"] for c in merged["cells"]) == sorted(
        ["seed=0,targets=qv", "seed=0,targets=qk", "seed=1,targets=qv"])
    assert all(c["run_dir"] == run_dirname(c["overrides"]) for c in merged["cells"])


def callback_config(sweep_dir: Path, **report) -> OmegaConf:
    return OmegaConf.create({"dry_run": False, "hydra": {"sweep": {"dir": str(sweep_dir)}},
                             "report": {"baseline": None, "metric": None, "tune": [], "confidence": 0.95, **report}})


def test_report_callback_passes_the_report_settings(tmp_path, monkeypatch):
    import lora_ablate.report.render as render

    calls = []
    monkeypatch.setattr(render, "write_report", lambda sweep_dir, **kw: calls.append((sweep_dir, kw)) or tmp_path)
    (tmp_path / "cell").mkdir()
    (tmp_path / "cell" / "result.json").write_text("{}")
    ReportCallback().on_multirun_end(callback_config(tmp_path, baseline="qk", tune=["train.lr"]))
    assert calls == [(tmp_path, {"baseline": "qk", "metric": None, "tune": ["train.lr"], "confidence": 0.95})]


def test_report_callback_skips_when_nothing_was_trained(tmp_path, monkeypatch):
    import lora_ablate.report.render as render

    monkeypatch.setattr(render, "write_report", lambda *a, **kw: pytest.fail("no report expected"))
    ReportCallback().on_multirun_end(callback_config(tmp_path))  # no records
    (tmp_path / "cell").mkdir()
    (tmp_path / "cell" / "result.json").write_text("{}")
    cfg = callback_config(tmp_path)
    cfg.dry_run = True
    ReportCallback().on_multirun_end(cfg)
