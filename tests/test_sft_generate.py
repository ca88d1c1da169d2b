"""Exact match of greedy generation (run/sft_generate.py): stopping at EOS and at a stop
string on a model whose next token we set (a bigram machine built into a Llama), left
padding against one-at-a-time generation on a random tiny_llama with a LoRA, the answer
comparison, the record's per-example bits, the runner's metrics, and the config checks."""

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

from cli_helpers import call_in_process
from helpers import compose_run
from lora_ablate.config.schema import TaskConfig
from lora_ablate.data.sft import SftEncoded
from lora_ablate.errors import ConfigError
from lora_ablate.model.loading import byte_tokenizer
from lora_ablate.records import ExampleLosses, RecordError
from lora_ablate.run.sft_generate import (
    GenerationSettings, cut_at_stop, exact_match_bits, final_answer, generate_completions, is_exact_match,
)
from test_sft import sft_overrides, write_sums

CPU = torch.device("cpu")
TOKENIZER = byte_tokenizer()
EOS = TOKENIZER.eos_token_id


def ids(text: str) -> list[int]:
    return TOKENIZER(text, add_special_tokens=False)["input_ids"]


def bigram_model(next_token: dict[int, int]) -> tuple[torch.nn.Module, list[int]]:
    """A Llama whose greedy next token depends only on the current token: every block's
    output projections are zero, so the last hidden state is the token's embedding; each
    token of `next_token` has its own basis direction, which the LM head maps to its
    successor. Wrapped in a LoRA (B = 0: the same outputs), as runs are. Also returns the
    list the LM head appends its input's row count to at every call."""
    config = LlamaConfig(vocab_size=260, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        model.model.embed_tokens.weight.zero_()
        model.lm_head.weight.zero_()
        for direction, (token, successor) in enumerate(next_token.items()):
            model.model.embed_tokens.weight[token, direction] = 1.0
            model.lm_head.weight[successor, direction] = 10.0
    calls: list[int] = []
    model.lm_head.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    return get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj", "v_proj"])), calls


def chain(text: str, end: int | None = EOS) -> dict[int, int]:
    """Successors that spell `text` one byte after another, then `end`."""
    tokens = ids(text)
    links = dict(zip(tokens, tokens[1:]))
    if end is not None:
        links[tokens[-1]] = end
    return links


def generate(model, prompts: list[str], settings: GenerationSettings, max_rows: int = 8) -> list[str]:
    return generate_completions(model, [[1, *ids(p)] for p in prompts], tokenizer=TOKENIZER, settings=settings,
                                pad_id=0, eos_id=EOS, device=CPU, autocast_dtype=None, max_tokens=4096,
                                max_rows=max_rows)


def test_generation_stops_at_eos_and_at_a_stop_string_and_ends_when_every_row_has():
    # "a" -> "bc" then EOS; "x" -> "y;z" and on (";" is the stop string; z loops on itself)
    model, calls = bigram_model({**chain("abc"), **chain("xy;z", end=None), ids("z")[0]: ids("z")[0]})
    texts = generate(model, ["qa", "qx"], GenerationSettings(max_new_tokens=30, stop_strings=(";",)))
    assert texts == ["bc", "y"]
    assert len(calls) == 3  # the prompt, then "b"/"y", then "c"/";": every row stopped, the batch ended
    calls.clear()
    texts = generate(model, ["qx"], GenerationSettings(max_new_tokens=6))  # no stop string: runs to the limit
    assert texts == ["y;zzzz"] and len(calls) == 6


def test_left_padding_gives_the_generations_of_one_prompt_at_a_time():
    cfg = compose_run(["model=tiny_llama", "train.device=cpu"])
    from lora_ablate.model.loading import load_model
    from lora_ablate.plan.resolve import resolve_run

    resolved = resolve_run(cfg)
    base = load_model(cfg.model, resolved.source, resolved.model_config, "sft", 2)
    model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"])).eval()
    torch.manual_seed(0)
    with torch.no_grad():  # a LoRA that changes the outputs, so its path is exercised
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    prompts = ["What is 2 plus 2?", "Hi", "A much longer prompt than the others, to pad the rest", "12 + 7 ="]
    settings = GenerationSettings(max_new_tokens=12)
    batched = generate(model, prompts, settings)
    assert batched == [generate(model, [p], settings)[0] for p in prompts]
    assert len(set(batched)) > 1  # the prompts matter: a constant output would prove nothing


def test_the_answer_is_cut_at_the_first_stop_string_and_compared_after_the_last_marker():
    assert cut_at_stop("SELECT 1\nmore;x", ["\n", ";"]) == "SELECT 1" and cut_at_stop("abc", ["\n"]) == "abc"
    assert final_answer("  so  7 \n", None) == "so 7"
    assert final_answer("6 #### 7 #### 8\t", "####") == "8" and final_answer("no marker", "####") is None
    assert is_exact_match(" SELECT  title\tFROM t ", "SELECT title FROM t", None)
    assert not is_exact_match("SELECT title FROM t2", "SELECT title FROM t", None)
    assert is_exact_match("think: 3+4 #### 7", "3 and 4 make #### 7", "####")
    assert not is_exact_match("the answer is 7", "#### 7", "####")  # no marker: no answer
    assert not is_exact_match("#### 7", "#### 7.0", "####")


def test_exact_match_bits_compare_each_generation_with_its_own_completion():
    model, _ = bigram_model({**chain("abc"), **chain("xy;z", end=None)})
    item = lambda prompt, completion: SftEncoded([1, *ids(prompt), *ids(completion), EOS], 1 + len(ids(prompt)))  # noqa: E731
    items = [item("qa", "bc"), item("qx", " y "), item("qa", "bd"), item("qx", "y;z")]
    bits = exact_match_bits(model, items, tokenizer=TOKENIZER, settings=GenerationSettings(10, (";",)), pad_id=0,
                            device=CPU, autocast_dtype=None, max_tokens=4096, max_rows=2)
    assert bits == [1, 1, 0, 0]  # whitespace collapsed; a gold that runs past the stop string never matches


def test_the_record_keeps_exact_match_bits_in_split_order_and_writes_none_without_them():
    with_bits = ExampleLosses([1.0, 2.0, 3.0], [1, 2, 3], [1, 1, 0], [1, 0, 1])
    data = json.loads(json.dumps(with_bits.to_dict()))
    assert data["exact_match"] == [1, 0, 1] and ExampleLosses.from_dict(data) == with_bits
    without = ExampleLosses([1.0], [1], [1])
    assert "exact_match" not in without.to_dict() and ExampleLosses.from_dict(without.to_dict()).exact_match == []
    with pytest.raises(RecordError, match="2 exact-match bits for 3 examples"):
        ExampleLosses([1.0, 2.0, 3.0], [1, 2, 3], [1, 1, 0], [1, 0])
    with pytest.raises(RecordError, match="0 or 1"):
        ExampleLosses.from_dict({**data, "exact_match": [1, 2, 0]})


def test_a_run_records_exact_match_on_val_and_test_and_picks_its_best_step_on_the_loss(tmp_path):
    from lora_ablate.run.runner import train

    path = write_sums(tmp_path / "sums.jsonl")
    cfg = compose_run(sft_overrides(path, "task.max_new_tokens=4", "task.stop_strings=['\\n']",
                                    "task.metric=exact_match", "train.max_steps=4", "train.batch_size=4",
                                    "train.eval_every=2"))
    record = train(cfg, run_dir=tmp_path / "run")
    for split in ("val", "test"):
        bits = record.example_losses[split].exact_match
        assert len(bits) == 8 and record.metrics[f"{split}/exact_match"] == sum(bits) / 8
    assert [p["step"] for p in record.history] == [2, 4]
    assert "val/exact_match" not in record.history[0] and "val/exact_match" in record.history[-1]
    assert set(record.best) == {"step", "val/loss"}  # generation is final-only: the curve is the loss
    assert record.best["val/loss"] == min(p["val/loss"] for p in record.history)


def test_a_task_without_a_checkable_answer_generates_nothing(tmp_path):
    from lora_ablate.run.runner import train

    cfg = compose_run(sft_overrides(write_sums(tmp_path / "sums.jsonl"), "train.max_steps=2", "train.batch_size=4"))
    record = train(cfg, run_dir=tmp_path / "run")
    assert not any(k.endswith("exact_match") for k in record.metrics)
    assert record.example_losses["test"].exact_match == []


@pytest.mark.parametrize("settings, needles", [
    ({"format": "sft", "metric": "exact_match"}, ("task.metric='exact_match'", "task.max_new_tokens=0")),
    ({"format": "head", "metric": "exact_match"}, ("task.metric='exact_match' does not apply", "accuracy, macro_f1")),
    ({"format": "head", "max_new_tokens": 8}, ("task.max_new_tokens", "classification task", "task.format=sft")),
    ({"format": "sft", "metric": "loss", "max_new_tokens": -1}, ("task.max_new_tokens must be >= 0", "got -1")),
    ({"format": "sft", "metric": "loss", "stop_strings": ["\n", ""]}, ("task.stop_strings", "empty string")),
    ({"format": "sft", "metric": "loss", "answer_marker": ""}, ("task.answer_marker is an empty string",)),
])
def test_generation_settings_that_cannot_work_are_refused(settings, needles):
    with pytest.raises(ConfigError) as err:
        TaskConfig(name="x", source="local", **settings)
    assert all(needle in str(err.value) for needle in needles), str(err.value)


def test_exact_match_without_generation_is_one_paragraph_before_training(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write_sums(Path("x.jsonl"))
    status, _, err = call_in_process(monkeypatch, capsys, [*sft_overrides(Path("x.jsonl")), "task.metric=exact_match"])
    lines = err.strip().splitlines()
    assert status == 2 and len(lines) == 1 and "task.max_new_tokens=0" in lines[0], err
    assert not (tmp_path / "outputs").exists()


def test_generation_settings_follow_the_task():
    task = TaskConfig(name="x", source="local", format="sft", metric="loss")
    assert GenerationSettings.from_task(task) is None
    made = GenerationSettings.from_task(replace(task, max_new_tokens=5, stop_strings=["\n"], answer_marker="####"))
    assert made == GenerationSettings(5, ("\n",), "####")


def test_the_generation_settings_at_their_defaults_leave_every_earlier_config_hash_as_it_was():
    from omegaconf import OmegaConf

    from lora_ablate.identity import ADDED_DEFAULTS, config_hash

    assert {k: ADDED_DEFAULTS[f"task.{k}"] for k in ("max_new_tokens", "stop_strings", "answer_marker")} == {
        "max_new_tokens": 0, "stop_strings": [], "answer_marker": None}
    config = OmegaConf.to_container(OmegaConf.structured(compose_run(["model=tiny_llama"])), resolve=True,
                                    enum_to_str=True)
    before = {**config, "task": {k: v for k, v in config["task"].items()
                                 if k not in ("max_new_tokens", "stop_strings", "answer_marker")}}
    assert config_hash(config) == config_hash(before)
    assert config_hash({**config, "task": {**config["task"], "stop_strings": ["\n"]}}) != config_hash(config)
