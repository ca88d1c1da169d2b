"""The hub SFT presets (alpaca, no_robots, gsm8k) read offline: each fixture is a tiny data
set laid out as its hub repo is (file names, configs, splits, column layout), loaded through
the real `datasets.load_dataset` from a local folder in place of the hub id, so the prompts,
completions and chats the presets mean come out of the same code path a GPU user runs."""

import json
import logging
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from cli_helpers import call_in_process
from helpers import CONF
from lora_ablate.config.schema import TaskConfig
from lora_ablate.data.sft import SftExample
from lora_ablate.data.tasks import load_sft_task
from lora_ablate.errors import ConfigError

datasets = pytest.importorskip("datasets")  # optional: only hub tasks need it

ALPACA_WITH_INPUT = ("Below is an instruction that describes a task, paired with an input that provides further "
                     "context. Write a response that appropriately completes the request.\n\n### Instruction:\n{}\n\n"
                     "### Input:\n{}\n\n### Response:\n")  # Stanford Alpaca's two prompts
ALPACA_NO_INPUT = ("Below is an instruction that describes a task. Write a response that appropriately completes "
                   "the request.\n\n### Instruction:\n{}\n\n### Response:\n")


@pytest.fixture(scope="module")
def hub_dirs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hub")
    return {"alpaca": alpaca_repo(root / "alpaca"), "no_robots": no_robots_repo(root / "no_robots"),
            "gsm8k": gsm8k_repo(root / "gsm8k")}


@pytest.fixture
def load_calls(monkeypatch, tmp_path) -> list[tuple]:
    """datasets.load_dataset as the source calls it, refusing anything but trust_remote_code=False
    and caching under tmp_path (not the user's ~/.cache)."""
    real, calls = datasets.load_dataset, []

    def load_dataset(path, name=None, **kwargs):
        assert kwargs.get("trust_remote_code") is False, kwargs  # no dataset loading scripts, ever
        calls.append((path, name, kwargs))
        return real(path, name, cache_dir=str(tmp_path / "datasets"), **kwargs)

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return calls


def alpaca_repo(folder: Path) -> Path:
    """yahma/alpaca-cleaned: one JSON array, alpaca_data_cleaned.json, keys output/input/instruction."""
    folder.mkdir()
    rows = [{"output": f"Colour {i} is {c}.", "input": "" if i % 3 else f"Palette {i}", "instruction": f"Name colour {i}."}
            for i, c in enumerate(["red", "green", "blue", "teal", "amber", "olive", "navy", "plum", "rust"])]
    (folder / "alpaca_data_cleaned.json").write_text(json.dumps(rows, indent=4))
    return folder


def chat(i: int, system: bool = False, turns: int = 1) -> list[dict]:
    messages = [{"content": "You are terse.", "role": "system"}] if system else []
    for t in range(turns):
        messages += [{"content": f"Question {i}.{t}?", "role": "user"}, {"content": f"Answer {i}.{t}.", "role": "assistant"}]
    return messages


def no_robots_repo(folder: Path) -> Path:
    """HuggingFaceH4/no_robots: data/{train,test}-00000-of-00001.parquet with prompt, prompt_id,
    messages ([{content, role}]) and category."""
    (folder / "data").mkdir(parents=True)
    for split, chats in {"train": [chat(0), chat(1, system=True), chat(2, turns=2), chat(3), chat(4), chat(5)],
                         "test": [chat(6), chat(7, system=True, turns=2), chat(8)]}.items():
        datasets.Dataset.from_dict({
            "prompt": [next(m["content"] for m in c if m["role"] == "user") for c in chats],
            "prompt_id": [f"id{i}" for i in range(len(chats))],
            "messages": chats,
            "category": ["Chat"] * len(chats),
        }).to_parquet(folder / "data" / f"{split}-00000-of-00001.parquet")
    return folder


def gsm8k_repo(folder: Path) -> Path:
    """openai/gsm8k: configs main and socratic, <config>/{train,test}-00000-of-00001.parquet,
    question -> answer whose last line is '#### <number>'."""
    readme = ["---", "configs:"]
    for config in ("main", "socratic"):
        readme += [f"- config_name: {config}", "  data_files:"]
        (folder / config).mkdir(parents=True)
        for split, numbers in {"train": range(0, 6), "test": range(6, 9)}.items():
            readme += [f"  - split: {split}", f"    path: {config}/{split}-*"]
            asked = "How many" if config == "main" else "Socratic: how many"
            datasets.Dataset.from_dict({
                "question": [f"{asked} apples are {n} and {n} apples?" for n in numbers],
                "answer": [f"{n} + {n} = <<{n}+{n}={2 * n}>>{2 * n} apples.\n#### {2 * n}" for n in numbers],
            }).to_parquet(folder / config / f"{split}-00000-of-00001.parquet")
    (folder / "README.md").write_text("\n".join([*readme, "---", ""]))
    return folder


def preset(name: str, folder: Path, **overrides) -> TaskConfig:
    """conf/task/<name>.yaml with the fixture folder in place of its hub id."""
    cfg = OmegaConf.merge(OmegaConf.structured(TaskConfig), OmegaConf.load(CONF / "task" / f"{name}.yaml"),
                          {"hub_id": str(folder), "val_size": 2, "test_size": 2, **overrides})
    return OmegaConf.to_object(cfg)


def everything(cfg: TaskConfig) -> list[SftExample]:
    data = load_sft_task(cfg)
    return data.train + data.validation + data.test


def test_alpaca_prompts_are_stanford_alpacas_with_and_without_input(hub_dirs, load_calls) -> None:
    examples = {e.completion: e.prompt for e in everything(preset("alpaca", hub_dirs["alpaca"]))}
    assert load_calls == [(str(hub_dirs["alpaca"]), None, {"trust_remote_code": False})]
    assert len(examples) == 9
    assert examples["Colour 3 is teal."] == ALPACA_WITH_INPUT.format("Name colour 3.", "Palette 3")
    assert examples["Colour 4 is amber."] == ALPACA_NO_INPUT.format("Name colour 4.")


def test_no_robots_chats_pool_both_splits_and_end_in_the_assistants_answer(hub_dirs, load_calls) -> None:
    examples = {e.completion: e.prompt for e in everything(preset("no_robots", hub_dirs["no_robots"]))}
    assert len(examples) == 9  # 6 train + 3 test
    assert examples["Answer 1.0."] == (("system", "You are terse."), ("user", "Question 1.0?"))
    assert examples["Answer 7.1."] == (("system", "You are terse."), ("user", "Question 7.0?"),
                                       ("assistant", "Answer 7.0."), ("user", "Question 7.1?"))


def test_gsm8k_reads_config_main_and_its_answers_end_in_the_marker(hub_dirs, load_calls) -> None:
    cfg = preset("gsm8k", hub_dirs["gsm8k"])
    examples = everything(cfg)
    assert load_calls[0][1] == "main"
    assert len(examples) == 9 and not any("Socratic" in e.prompt for e in examples)
    by_prompt = {e.prompt: e.completion for e in examples}
    completion = by_prompt["Question: How many apples are 7 and 7 apples?\nAnswer:\n"]
    assert completion == "7 + 7 = <<7+7=14>>14 apples.\n#### 14"
    assert completion.rsplit(cfg.answer_marker, 1)[1].strip() == "14"  # what exact match compares


def test_rows_without_a_completion_are_left_out_and_counted(tmp_path, load_calls, caplog) -> None:
    """A split whose answers are held back, as GLUE's test labels are: its rows are unlabelled."""
    folder = tmp_path / "pairs"
    (folder / "data").mkdir(parents=True)
    datasets.Dataset.from_dict({"prompt": [f"p{i}" for i in range(8)], "completion": [f"c{i}" for i in range(8)]}
                               ).to_parquet(folder / "data" / "train-00000-of-00001.parquet")
    datasets.Dataset.from_dict({"prompt": ["hidden1", "hidden2", "h3"], "completion": [None, "", "c-h3"]}
                               ).to_parquet(folder / "data" / "test-00000-of-00001.parquet")
    cfg = TaskConfig(name="pairs", source="hub", hub_id=str(folder), format="sft", metric="loss", val_size=2, test_size=2)
    with caplog.at_level(logging.INFO, logger="lora_ablate.data.sources.hub"):
        examples = everything(cfg)
    assert sorted(e.prompt for e in examples) == sorted([*(f"p{i}" for i in range(8)), "h3"])
    assert "left out 2 rows without a completion" in caplog.text


def test_a_column_the_preset_reads_but_the_data_set_lacks_is_named(hub_dirs, load_calls) -> None:
    with pytest.raises(ConfigError) as err:
        everything(preset("alpaca", hub_dirs["alpaca"], completion_column="response"))
    assert "task.completion_column='response' is not a column of hub dataset" in str(err.value)
    assert "columns on split 'train': output, input, instruction" in str(err.value)
    with pytest.raises(ConfigError) as err:
        everything(preset("gsm8k", hub_dirs["gsm8k"], prompt_templates=["{question} {context}"]))
    assert "task.prompt_templates[0]='{question} {context}' uses the field {context}" in str(err.value)


@pytest.mark.parametrize("task", ["alpaca", "gsm8k"])
def test_the_cli_dry_run_reads_and_tokenises_the_preset(task, hub_dirs, load_calls, monkeypatch, capsys) -> None:
    """`lora-ablate model=tiny_llama task=<preset> dry_run=true`: the preflight reads the data
    through the hub path and tokenises it (tiny_llama has no hub weights to fetch)."""
    args = ["model=tiny_llama", f"task={task}", f"task.hub_id={hub_dirs[task]}", "task.val_size=2", "task.test_size=2",
            "task.max_length=256", "train.device=cpu", "dry_run=true"]
    status, out, err = call_in_process(monkeypatch, capsys, args)
    assert status == 0, err
    assert json.loads(out)["lora_params"] > 0 and load_calls


def test_the_chat_preset_needs_a_chat_template_and_says_so(hub_dirs, load_calls, monkeypatch, capsys) -> None:
    args = ["model=tiny_llama", "task=no_robots", f"task.hub_id={hub_dirs['no_robots']}", "task.val_size=2",
            "task.test_size=2", "task.max_length=256", "train.device=cpu", "dry_run=true"]
    status, _, err = call_in_process(monkeypatch, capsys, args)
    assert status == 2 and "chat template" in err and load_calls  # read, then refused before training
