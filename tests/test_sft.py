"""Generative fine-tuning (task.format=sft) on tiny_llama from its config: the completion-only
loss against an independent full-logits reference, prompt masking, the truncation policy,
the data checks, the record's per-example losses, and the command line end to end."""

import json
import math
import random
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from cli_helpers import call_in_process, records, run_cli
from helpers import compose_run
from lora_ablate.config.schema import TaskConfig
from lora_ablate.data.sft import SftExample, encode_sft, split_sft_examples
from lora_ablate.errors import ConfigError
from lora_ablate.model.loading import byte_tokenizer
from lora_ablate.records import ExampleLosses, RunRecord
from lora_ablate.run.sft_batches import collate_sft
from lora_ablate.run.sft_loss import completion_token_nll

CHAT_TEMPLATE = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}<assistant>{% endif %}")


def write_sums(path: Path, n: int = 40) -> Path:
    """n lines of "What is a plus b?" -> " a+b", distinct prompts."""
    rng = random.Random(0)
    pairs = sorted({(rng.randint(0, 99), rng.randint(0, 99)) for _ in range(4 * n)})[:n]
    path.write_text("".join(json.dumps({"prompt": f"What is {a} plus {b}?\nAnswer:", "completion": f" {a + b}"}) + "\n"
                            for a, b in pairs))
    return path


def sft_overrides(path: Path, *extra: str) -> list[str]:
    return ["model=tiny_llama", "task=local", "task.format=sft", f"task.path={path}", "task.val_size=8",
            "task.test_size=8", "train.device=cpu", "train.precision=fp32", *extra]


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    """tiny_llama with a qv adapter whose B matrices are non-zero, so the LoRA path counts."""
    from lora_ablate.plan.resolve import resolve_run
    from lora_ablate.run.session import prepare

    path = write_sums(tmp_path_factory.mktemp("sft") / "sums.jsonl")
    cfg = compose_run(sft_overrides(path))
    made = prepare(cfg, resolve_run(cfg), torch.device("cpu"))
    torch.manual_seed(0)
    with torch.no_grad():
        for name, param in made.model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    made.model.eval()
    return made


def reference_nll(model, items) -> float:
    """Summed completion NLL from the full logits and a masked cross-entropy (prompt and
    padding labelled -100), the way a plain causal-LM SFT loop computes it."""
    width = max(len(i.input_ids) for i in items)
    ids = torch.zeros((len(items), width), dtype=torch.long)
    mask = torch.zeros_like(ids)
    labels = torch.full_like(ids, -100)
    for row, item in enumerate(items):
        ids[row, : len(item.input_ids)] = torch.tensor(item.input_ids)
        mask[row, : len(item.input_ids)] = 1
        labels[row, item.prompt_length : len(item.input_ids)] = torch.tensor(item.input_ids[item.prompt_length :])
    logits = model(input_ids=ids, attention_mask=mask).logits
    return float(F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100,
                                 reduction="sum"))


def test_the_loss_equals_a_full_logits_reference_and_projects_only_completion_positions(session):
    items = session.train_items[:6]  # of different lengths: right padding is exercised
    assert len({len(i.input_ids) for i in items}) > 1
    batch = collate_sft(items, session.pad_id)
    projected = []
    head = session.model.get_base_model().get_output_embeddings()
    hook = head.register_forward_hook(lambda _m, args, _out: projected.append(args[0].shape[0]))
    try:
        with torch.no_grad():
            nll, _ = completion_token_nll(session.model, batch)
    finally:
        hook.remove()
    completion_tokens = sum(i.completion_length for i in items)
    assert projected == [completion_tokens] and len(nll) == completion_tokens
    with torch.no_grad():
        expected = reference_nll(session.model, items)
    assert float(nll.sum()) == pytest.approx(expected, rel=1e-5)


def test_prompt_positions_do_not_count_and_the_last_prompt_position_does(session):
    """Outputs at prompt positions (which predict prompt tokens) are changed after the body:
    the loss must not move. The last prompt position predicts the first completion token."""
    items = session.train_items[:4]
    batch = collate_sft(items, session.pad_id)
    body = session.model.get_base_model().base_model

    def loss_with(noise_until) -> float:
        def perturb(_module, _args, output):
            hidden = output.last_hidden_state.clone()
            for row, item in enumerate(items):
                hidden[row, : noise_until(item)] += 3.0
            output.last_hidden_state = hidden
            return output

        hook = body.register_forward_hook(perturb)
        try:
            with torch.no_grad():
                return float(completion_token_nll(session.model, batch)[0].sum())
        finally:
            hook.remove()

    with torch.no_grad():
        clean = float(completion_token_nll(session.model, batch)[0].sum())
    assert loss_with(lambda item: item.prompt_length - 1) == pytest.approx(clean, rel=1e-6)
    assert loss_with(lambda item: item.prompt_length) != pytest.approx(clean, rel=1e-3)


def test_prompts_are_cut_from_the_left_and_completions_end_with_eos():
    tokenizer = byte_tokenizer()
    splits = {"train": [SftExample("abcdefgh", "xy")], "validation": [], "test": []}
    made = encode_sft(splits, tokenizer, max_length=6, where="test data")
    (item,) = made.train
    assert tokenizer.decode(item.input_ids[: item.prompt_length]) == "fgh"  # BOS and "abcde" cut
    assert item.input_ids[item.prompt_length :] == [*tokenizer("xy", add_special_tokens=False)["input_ids"],
                                                    tokenizer.eos_token_id]
    whole = encode_sft(splits, tokenizer, max_length=64, where="test data").train[0]
    assert tokenizer.decode(whole.input_ids[: whole.prompt_length], skip_special_tokens=True) == "abcdefgh"


def test_a_completion_too_long_is_dropped_and_counted_never_cut(caplog):
    tokenizer = byte_tokenizer()
    train = [SftExample("p1", "short"), SftExample("p2", "x" * 30), SftExample("p3", "ok")]
    made = encode_sft({"train": train, "validation": [], "test": []}, tokenizer, max_length=10, where="test data")
    assert made.dropped == {"train": 1, "validation": 0, "test": 0}
    assert [i.completion_length for i in made.train] == [6, 3]  # "short"+EOS, "ok"+EOS: whole
    assert "dropped 1 completions" in caplog.text
    with pytest.raises(ConfigError, match=r"Every completion of the train split.*task.max_length=4"):
        encode_sft({"train": train[1:2], "validation": [], "test": []}, tokenizer, max_length=4, where="test data")


def test_splits_are_fixed_by_data_seed_and_deduplicated_by_prompt():
    examples = [SftExample(f"prompt {i}", f" {i}") for i in range(30)] + [SftExample("prompt  3", " other")]
    sizes = {"train_size": None, "val_size": 5, "test_size": 5}
    first = split_sft_examples(examples, **sizes, data_seed=1)
    again = split_sft_examples(list(reversed(examples)), **sizes, data_seed=1)
    assert first == again and sum(map(len, first)) == 30  # "prompt  3" is "prompt 3": one example
    assert split_sft_examples(examples, **sizes, data_seed=2)[2] != first[2]
    with pytest.raises(ConfigError, match="leaves no training data"):
        split_sft_examples(examples, train_size=None, val_size=15, test_size=15, data_seed=1)


def test_chat_messages_are_rendered_with_the_tokenizer_template(tmp_path):
    from lora_ablate.data.sources.local import SOURCE

    path = tmp_path / "chat.jsonl"
    chat = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    path.write_text(json.dumps({"messages": chat}) + "\n")
    cfg = TaskConfig(name="local", source="local", path=str(path), format="sft", metric="loss", messages_column="messages")
    (example,) = SOURCE.load_sft(cfg)
    assert example == SftExample((("user", "Hi"),), "Hello!")
    splits = {"train": [example], "validation": [], "test": []}
    with pytest.raises(ConfigError, match="has none"):
        encode_sft(splits, byte_tokenizer(), max_length=64, where="x")
    tokenizer = byte_tokenizer()
    tokenizer.chat_template = CHAT_TEMPLATE
    (item,) = encode_sft(splits, tokenizer, max_length=64, where="x").train
    assert tokenizer.decode(item.input_ids[: item.prompt_length]) == "<user>Hi\n<assistant>"
    assert tokenizer.decode(item.input_ids[item.prompt_length :], skip_special_tokens=True) == "Hello!"


def test_a_csv_file_reads_configured_columns_as_written_and_names_a_missing_one(tmp_path):
    from lora_ablate.data.sources.local import SOURCE

    path = tmp_path / "pairs.csv"
    path.write_text('question,answer\n"Capital of France?"," Paris"\n')
    cfg = TaskConfig(name="local", source="local", path=str(path), format="sft", metric="loss",
                     prompt_column="question", completion_column="answer")
    assert SOURCE.load_sft(cfg) == [SftExample("Capital of France?", " Paris")]  # the leading space is kept
    with pytest.raises(ConfigError, match=r"task.completion_column='completion' is not a column of pairs.csv "
                                          r"\(columns on its header, line 1: question, answer\)"):
        SOURCE.load_sft(replace(cfg, completion_column="completion"))
    with pytest.raises(ConfigError, match="needs a .jsonl file"):
        SOURCE.load_sft(replace(cfg, messages_column="messages"))


def test_the_record_keeps_example_losses_and_older_records_load_without_them():
    losses = ExampleLosses([1.5, 0.25], [3, 1], [2, 1])
    assert ExampleLosses.from_dict(losses.to_dict()) == losses
    assert losses.mean_nll == [0.5, 0.25] and losses.token_accuracy == [2 / 3, 1.0]
    import numpy as np

    from fake_records import make_record

    record = make_record(model="tiny_llama", task="local", target_set="qv", budget="reference", scale=1.0, seed=0,
                         accuracy=0.8, history_points=2, index=0, rng=np.random.default_rng(0), test_size=10, val_size=10)
    old = record.to_dict()
    assert "example_losses" not in old  # a classification record is written as before
    assert RunRecord.from_dict(old).example_losses == {} and RunRecord.from_dict(old).dropped_completions == {}
    sft = replace(record, example_losses={"test": losses}, dropped_completions={"train": 2})
    assert RunRecord.from_dict(json.loads(json.dumps(sft.to_dict()))) == sft


def test_the_best_step_is_the_lowest_loss_and_convergence_reads_the_direction():
    from lora_ablate.run.runner import _best, still_improving

    history = [{"step": 10, "val/loss": 2.0}, {"step": 20, "val/loss": 1.0}, {"step": 30, "val/loss": 1.5}]
    assert _best(history, {"val/loss": 1.8}, 40, "loss") == {"step": 20, "val/loss": 1.0}
    assert _best([{"step": 10, "val/accuracy": 0.6}], {"val/accuracy": 0.7}, 20, "accuracy")["step"] == 20
    falling = still_improving(history[:1], 40, "loss", {"val/loss": 1.0}, [0.9, 1.1, 1.0, 1.0])
    assert falling.still_improving is True and falling.gain == pytest.approx(1.0)
    rising = still_improving(history[:1], 40, "loss", {"val/loss": 3.0}, [0.9, 1.1, 1.0, 1.0])
    assert rising.still_improving is False and rising.gain == pytest.approx(-1.0)


# --- the command line ------------------------------------------------------------------


def call(monkeypatch, capsys, args: list[str]) -> tuple[int, str]:
    """`lora-ablate ARGS` in this process: (exit status, stderr)."""
    status, _, err = call_in_process(monkeypatch, capsys, args)
    return status, err


def one_paragraph(status: int, err: str, folder: Path) -> str:
    lines = err.strip().splitlines()
    assert status == 2 and len(lines) == 1 and lines[0].startswith("lora-ablate: error: "), err
    assert not (folder / "outputs").exists()
    return lines[0]


def test_a_missing_completion_column_is_one_paragraph_before_training(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    Path("x.jsonl").write_text("".join(json.dumps({"prompt": f"q{i}", "answer": f"a{i}"}) + "\n" for i in range(40)))
    error = one_paragraph(*call(monkeypatch, capsys, sft_overrides(Path("x.jsonl"))), tmp_path)
    assert "task.completion_column='completion' is not a column of x.jsonl (columns on line 1: prompt, answer)" in error


@pytest.mark.parametrize("dry_run", [True, False])
def test_an_encoder_with_an_sft_task_is_refused(tmp_path, monkeypatch, capsys, dry_run):
    monkeypatch.chdir(tmp_path)
    write_sums(Path("x.jsonl"))
    args = ["model=minilm", "task=local", "task.format=sft", "task.path=x.jsonl", *(["dry_run=true"] if dry_run else [])]
    error = one_paragraph(*call(monkeypatch, capsys, args), tmp_path)
    assert "model 'minilm'" in error and "is an encoder" in error and "model=tiny_llama" in error


def test_the_embedded_sft_task_with_an_encoder_is_refused_in_a_dry_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    error = one_paragraph(*call(monkeypatch, capsys, ["model=minilm", "task=bbc_headlines", "dry_run=true"]), tmp_path)
    assert "model 'minilm'" in error and "is an encoder" in error


@pytest.mark.parametrize("args, needles", [
    (["task.metric=accuracy"], ("task.metric='accuracy'", "SFT tasks", "loss, token_accuracy")),
    (["task.messages_column=messages"], ("task.messages_column='messages' is not a column of x.jsonl",)),
])
def test_sft_settings_that_cannot_work_are_refused(tmp_path, monkeypatch, capsys, args, needles):
    monkeypatch.chdir(tmp_path)
    write_sums(Path("x.jsonl"))
    error = one_paragraph(*call(monkeypatch, capsys, [*sft_overrides(Path("x.jsonl")), *args]), tmp_path)
    assert all(needle in error for needle in needles), error


def test_a_chat_file_with_a_tokenizer_without_a_template_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    chat = lambda i: [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]  # noqa: E731
    Path("c.jsonl").write_text("".join(json.dumps({"messages": chat(i)}) + "\n" for i in range(40)))
    error = one_paragraph(*call(monkeypatch, capsys, [*sft_overrides(Path("c.jsonl")), "task.messages_column=messages"]),
                          tmp_path)
    assert "chat template" in error and "has none" in error


def test_loss_on_a_classification_task_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    error = one_paragraph(*call(monkeypatch, capsys, ["model=tiny_bert", "task.metric=loss"]), tmp_path)
    assert "task.metric='loss'" in error and "accuracy, macro_f1" in error and "task.format=sft" in error


def test_the_command_line_trains_on_a_prompt_completion_file(tmp_path):
    write_sums(tmp_path / "x.jsonl")
    args = [*sft_overrides(Path("x.jsonl"), "train.max_steps=4", "train.batch_size=4", "train.eval_every=2"),
            "hydra.run.dir=run"]
    done = run_cli(args, tmp_path)
    assert done.returncode == 0, done.explain()
    (record,) = records(tmp_path / "run").values()
    assert record["status"] == "completed" and record["config"]["task"]["metric"] == "loss"
    losses = RunRecord.from_dict(record).example_losses
    assert len(losses["test"].nll) == 8 and len(losses["val"].nll) == 8
    assert all(n > 0 for n in losses["test"].nll) and all(t >= 2 for t in losses["test"].tokens)  # digits + EOS
    metrics = record["metrics"]
    assert metrics["test/loss"] == pytest.approx(sum(losses["test"].nll) / sum(losses["test"].tokens))
    assert metrics["test/perplexity"] == pytest.approx(math.exp(metrics["test/loss"]))
    assert 0 <= metrics["test/token_accuracy"] <= 1
    assert record["best"]["val/loss"] == min(p["val/loss"] for p in record["history"])
    assert record["dropped_completions"] == {"train": 0, "validation": 0, "test": 0} and record["collapsed"] is False
