"""task.prompt_templates: SFT prompts built from several columns. Templates are checked before
any data is read (plain column fields only, no attribute or index access), the first template
whose columns hold text in a row gives its prompt, and local files read them through the same
row functions as hub data sets."""

import json
from dataclasses import replace
from pathlib import Path

import pytest

from lora_ablate.config.schema import TaskConfig
from lora_ablate.data.sources.prompt_templates import prompt_templates, render_prompt
from lora_ablate.data.tasks import check_task_config, load_sft_task
from lora_ablate.errors import ConfigError

WITH_INPUT = "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
WITHOUT_INPUT = "### Instruction:\n{instruction}\n\n### Response:\n"


def sft_task(**overrides) -> TaskConfig:
    return replace(TaskConfig(name="t", source="local", path="unused.jsonl", format="sft", metric="loss"), **overrides)


def test_the_first_template_whose_columns_hold_text_gives_the_prompt() -> None:
    templates = prompt_templates(sft_task(prompt_templates=[WITH_INPUT, WITHOUT_INPUT]))
    assert [t.columns for t in templates] == [("instruction", "input"), ("instruction",)]
    both = {"instruction": "Add them.", "input": "2, 3"}
    assert render_prompt(templates, both, "row 1") == "### Instruction:\nAdd them.\n\n### Input:\n2, 3\n\n### Response:\n"
    for empty in ("", "   ", None):
        row = {"instruction": "Name a colour.", "input": empty}
        assert render_prompt(templates, row, "row 2") == "### Instruction:\nName a colour.\n\n### Response:\n"


def test_cells_are_written_as_they_are_and_literal_braces_stay_literal() -> None:
    templates = prompt_templates(sft_task(prompt_templates=["{{json}} {a}|{b}|{a}"]))
    assert render_prompt(templates, {"a": " x ", "b": 7}, "row 1") == "{json}  x |7| x "


def test_a_row_that_no_template_fits_is_named_with_its_cells() -> None:
    templates = prompt_templates(sft_task(prompt_templates=[WITH_INPUT]))
    with pytest.raises(ConfigError) as err:
        render_prompt(templates, {"instruction": "Add them.", "input": ""}, "row 9 of split 'train'")
    assert "row 9 of split 'train'" in str(err.value) and "input=''" in str(err.value)


def test_a_cell_that_is_not_text_is_named() -> None:
    templates = prompt_templates(sft_task(prompt_templates=["{context}"]))
    with pytest.raises(ConfigError, match=r"The 'context' value on row 3 is \['a', 'b'\]"):
        render_prompt(templates, {"context": ["a", "b"]}, "row 3")


@pytest.mark.parametrize(
    ("templates", "named"),
    [
        (["{instruction.__class__}"], "{instruction.__class__}"),  # attribute access: never evaluated
        (["{instruction[0]}"], "{instruction[0]}"),
        (["{0}"], "{0}"),
        (["{}"], "{}"),
        (["{instruction!r}"], "{instruction!r}"),
        (["{instruction:>20}"], "{instruction:>20}"),
        (["Question: {question"], "is not a valid format string"),
        (["no fields"], "uses no column"),
        ([], "holds no template"),
    ],
)
def test_bad_templates_are_refused_before_data_is_read(templates: list[str], named: str) -> None:
    cfg = sft_task(path="/does/not/exist.jsonl", prompt_templates=templates)
    with pytest.raises(ConfigError) as err:
        check_task_config(cfg)  # what a dry run calls: no file is opened
    assert named in str(err.value) and "task.prompt_templates" in str(err.value)


def test_templates_and_messages_and_classification_do_not_mix() -> None:
    with pytest.raises(ConfigError, match=r"task.messages_column='messages' are both set"):
        check_task_config(sft_task(prompt_templates=[WITHOUT_INPUT], messages_column="messages"))
    classification = TaskConfig(name="c", source="local", path="x.csv", prompt_templates=[WITHOUT_INPUT])
    with pytest.raises(ConfigError, match=r"task 'c' is a classification task, whose prompt is task.prompt"):
        check_task_config(classification)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_a_local_jsonl_file_reads_templates_through_the_same_rows(tmp_path: Path) -> None:
    rows = [{"instruction": f"Say {i}.", "input": "loudly" if i % 2 else "", "output": f"{i}!"} for i in range(12)]
    cfg = sft_task(path=str(write_jsonl(tmp_path / "a.jsonl", rows)), prompt_templates=[WITH_INPUT, WITHOUT_INPUT],
                   completion_column="output", val_size=2, test_size=2)
    data = load_sft_task(cfg)
    examples = {e.completion: e.prompt for e in data.train + data.validation + data.test}
    assert len(examples) == 12
    assert examples["3!"] == "### Instruction:\nSay 3.\n\n### Input:\nloudly\n\n### Response:\n"
    assert examples["4!"] == "### Instruction:\nSay 4.\n\n### Response:\n"


def test_a_template_field_that_is_not_a_column_is_named(tmp_path: Path) -> None:
    csv = tmp_path / "a.csv"
    csv.write_text("instruction,output\nSay 1.,1!\nSay 2.,2!\n")
    cfg = sft_task(path=str(csv), prompt_templates=[WITHOUT_INPUT, "{instruction} {context}"], completion_column="output")
    with pytest.raises(ConfigError) as err:
        load_sft_task(cfg)
    message = str(err.value)
    assert "task.prompt_templates[1]" in message and "{context}" in message
    assert "columns on its header, line 1: instruction, output" in message
    jsonl = write_jsonl(tmp_path / "b.jsonl", [{"instruction": "Say 1.", "output": "1!"}, {"output": "2!"}])
    with pytest.raises(ConfigError, match=r"uses the field \{instruction\}, which is not a column of b.jsonl \(columns on line 2: output\)"):
        load_sft_task(replace(cfg, path=str(jsonl), prompt_templates=[WITHOUT_INPUT]))
