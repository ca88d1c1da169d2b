"""Tokenised splits are made once and read back: the same ids as made fresh, and made
again whenever the data, the settings or the tokenizer change."""

import os
from dataclasses import replace
from pathlib import Path

import pytest

from lora_ablate.config.schema import TaskConfig
from lora_ablate.data import encoded, tasks
from lora_ablate.data.encoding import encode
from lora_ablate.model.loading import byte_tokenizer


@pytest.fixture(autouse=True)
def fresh_cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("LORA_ABLATE_CACHE", str(tmp_path / "cache"))
    encoded._memo.clear()
    yield tmp_path / "cache"
    encoded._memo.clear()


@pytest.fixture
def reviews(tmp_path) -> Path:
    path = tmp_path / "reviews.csv"
    rows = [f'"review {i}: {"great fun" if i % 2 else "dull and long"}",{"pos" if i % 2 else "neg"}' for i in range(60)]
    path.write_text("text,label\n" + "\n".join(rows) + "\n")
    return path


def task_for(path: Path, **changes) -> TaskConfig:
    return replace(
        TaskConfig(name="reviews", source="local", path=str(path), val_size=10, test_size=20, max_length=32),
        **changes,
    )


def fresh(task: TaskConfig, tokenizer, task_format: str = "head") -> list[list[list[int]]]:
    """Token ids made directly from the data, no cache involved."""
    data = tasks.load_task(task)
    return [
        [e.input_ids for e in encode(split, tokenizer, task_format=task_format, max_length=task.max_length,
                                     prompt=task.prompt, label_words=task.label_words)]
        for split in (data.train, data.validation, data.test)
    ]


def ids(splits: encoded.EncodedSplits) -> list[list[list[int]]]:
    return [[e.input_ids for e in part] for part in (splits.train, splits.validation, splits.test)]


def forbid_reading(monkeypatch):
    def refuse(*_args, **_kwargs):
        raise AssertionError("the data was read again although its tokenised splits were cached")

    monkeypatch.setattr(tasks, "load_task", refuse)


def test_cached_splits_match_fresh_ones_from_memory_and_from_disk(reviews, fresh_cache, monkeypatch):
    task, tokenizer = task_for(reviews), byte_tokenizer()
    expected = fresh(task, tokenizer)
    first = encoded.encoded_splits(task, tokenizer, "head")
    assert ids(first) == expected
    assert [len(part) for part in expected] == [30, 10, 20]
    assert len(list((fresh_cache / "encoded").glob("reviews-*.json"))) == 1

    forbid_reading(monkeypatch)
    assert encoded.encoded_splits(task, byte_tokenizer(), "head") is first  # the process memo
    encoded._memo.clear()
    from_disk = encoded.encoded_splits(task, byte_tokenizer(), "head")  # a new process: the file
    assert ids(from_disk) == expected
    assert [e.label for e in from_disk.test] == [e.label for e in first.test]
    assert from_disk.label_names == first.label_names == ["neg", "pos"]


def test_label_word_answers_survive_the_round_trip(reviews):
    task, tokenizer = task_for(reviews, label_words=[" no", " yes"], prompt="{text} ok?"), byte_tokenizer()
    first = encoded.encoded_splits(task, tokenizer, "label_words")
    encoded._memo.clear()
    again = encoded.encoded_splits(task, tokenizer, "label_words")
    assert again.train == first.train and again.test == first.test
    assert again.train[0].answers == tuple(
        tuple(tokenizer(w, add_special_tokens=False)["input_ids"]) for w in (" no", " yes")
    )


@pytest.mark.parametrize(
    "change",
    [
        {"max_length": 8},
        {"data_seed": 7},
        {"test_size": 12},
    ],
)
def test_changed_settings_make_the_splits_again(reviews, change):
    tokenizer = byte_tokenizer()
    before = encoded.encoded_splits(task_for(reviews), tokenizer, "head")
    changed = task_for(reviews, **change)
    after = encoded.encoded_splits(changed, tokenizer, "head")
    assert ids(after) == fresh(changed, tokenizer) != ids(before)


def test_edited_data_file_is_read_again(reviews):
    tokenizer = byte_tokenizer()
    before = encoded.encoded_splits(task_for(reviews), tokenizer, "head")
    encoded._memo.clear()
    text = reviews.read_text().replace("great fun", "great joy")
    reviews.write_text(text)
    os.utime(reviews, ns=(1, 1))  # a different modification time even on a coarse clock
    after = encoded.encoded_splits(task_for(reviews), tokenizer, "head")
    assert ids(after) == fresh(task_for(reviews), tokenizer) != ids(before)


def test_another_tokenizer_gets_its_own_splits(reviews):
    task = task_for(reviews)
    plain = byte_tokenizer()
    other = byte_tokenizer()
    other.backend_tokenizer.post_processor = None  # no <s> in front: other ids
    first = encoded.encoded_splits(task, plain, "head")
    second = encoded.encoded_splits(task, other, "head")
    assert ids(second) == fresh(task, other) != ids(first)
    assert all(row[0] != 1 for row in ids(second)[0])


def test_damaged_cache_file_is_made_again(reviews, fresh_cache):
    task, tokenizer = task_for(reviews), byte_tokenizer()
    expected = ids(encoded.encoded_splits(task, tokenizer, "head"))
    (path,) = (fresh_cache / "encoded").glob("*.json")
    path.write_text(path.read_text()[:100])  # truncated, as by a full disk
    encoded._memo.clear()
    assert ids(encoded.encoded_splits(task, tokenizer, "head")) == expected
    assert ids(encoded._read(path)) == expected  # and the file is whole again


def test_unpinned_hub_data_stays_out_of_the_disk_cache():
    hub = TaskConfig(name="sst2", source="hub", hub_id="glue", hub_config="sst2")
    assert tasks.data_identity(hub) is None
    packaged = TaskConfig(name="rt", source="vader", subset="movieReviewSnippets")
    assert tasks.data_identity(packaged) != tasks.data_identity(replace(packaged, subset="tweets"))
