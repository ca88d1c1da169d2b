"""A task's splits, tokenised: made once per data, tokenizer and settings, then read back.

Reading, splitting and tokenising Rotten Tomatoes takes 1-2 s, as long as all the rest of
a run's start-up, and every cell of a sweep would repeat it. The result is kept in the
process (a sweep's jobs run in one process, or in reused worker processes) and on disk
under the cache, as `datasets` keeps its processed files. The key covers everything the
token ids depend on: the task settings, the data's identity, the tokenizer's full
definition, the task format and the code that reads, splits and encodes. The file
carries the sha256 of its content (cache/json_entries.py): one edited or damaged since it
was written is made again, with a warning naming it.
"""

import dataclasses
import functools
import hashlib
import json
import logging
import re
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import PreTrainedTokenizerBase

from lora_ablate.cache import cache_root
from lora_ablate.cache.json_entries import EntryMismatch, read_json_entry, write_json_entry
from lora_ablate.config.schema import TaskConfig
from lora_ablate.data import tasks
from lora_ablate.data.encoding import Encoded, encode
from lora_ablate.data.sft import SftSplits, encode_sft

log = logging.getLogger(__name__)
SPLIT_NAMES = ("train", "validation", "test")
MEMO_SIZE = 2  # tokenised tasks kept in the process; a sweep usually needs one


@dataclass(frozen=True)
class EncodedSplits:
    label_names: list[str]
    train: list[Encoded]
    validation: list[Encoded]
    test: list[Encoded]


_memo: "OrderedDict[str, EncodedSplits]" = OrderedDict()


def encoded_splits(task: TaskConfig, tokenizer: PreTrainedTokenizerBase, task_format: str) -> EncodedSplits:
    """The task's train/validation/test examples as token ids, from the process memo,
    the disk cache, or made now (and stored in both)."""
    data_id, tokenizer_id = tasks.data_identity(task), _tokenizer_identity(tokenizer)
    key = _key(task, task_format, data_id or "unpinned", tokenizer_id or f"object:{id(tokenizer)}")
    if key in _memo:
        _memo.move_to_end(key)
        return _memo[key]
    # Without a stable identity (a hub dataset at no pinned revision, a slow tokenizer)
    # the splits stay in this process only.
    path = cache_root() / "encoded" / f"{_file_safe(task.name)}-{key}.json" if data_id and tokenizer_id else None
    made = _read(path) if path is not None else None
    if made is None:
        made = _make(task, tokenizer, task_format)
        if path is not None:
            _write(path, made)
    _memo[key] = made
    while len(_memo) > MEMO_SIZE:
        _memo.popitem(last=False)
    return made


def _make(task: TaskConfig, tokenizer: PreTrainedTokenizerBase, task_format: str) -> EncodedSplits:
    data = tasks.load_task(task)
    parts = [
        encode(
            examples,
            tokenizer,
            task_format=task_format,
            max_length=task.max_length,
            prompt=task.prompt,
            label_words=task.label_words,
        )
        for examples in (data.train, data.validation, data.test)
    ]
    return EncodedSplits(data.label_names, *parts)


def sft_splits(task: TaskConfig, tokenizer: PreTrainedTokenizerBase) -> SftSplits:
    """An SFT task's splits as token ids (data/sft.py), kept in the process memo only:
    encoding is cheap next to an SFT run, and the preflight check and the run share it."""
    data_id, tokenizer_id = tasks.data_identity(task), _tokenizer_identity(tokenizer)
    key = "sft:" + _key(task, "sft", data_id or "unpinned", tokenizer_id or f"object:{id(tokenizer)}")
    if key not in _sft_memo:
        data = tasks.load_sft_task(task)
        splits = {"train": data.train, "validation": data.validation, "test": data.test}
        _sft_memo[key] = encode_sft(splits, tokenizer, max_length=task.max_length, where=tasks.describe(task))
        while len(_sft_memo) > MEMO_SIZE:
            _sft_memo.popitem(last=False)
    _sft_memo.move_to_end(key)
    return _sft_memo[key]


_sft_memo: "OrderedDict[str, SftSplits]" = OrderedDict()


# --- the key -------------------------------------------------------------------------


def _file_safe(name: str) -> str:
    """The task name as part of a file name: never a path out of the cache."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).lstrip(".")[:80] or "task"


def _key(task: TaskConfig, task_format: str, data_id: str, tokenizer_id: str) -> str:
    parts = {
        "task": dataclasses.asdict(task),
        "format": task_format,
        "data": data_id,
        "tokenizer": tokenizer_id,
        "code": _code_identity(),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _tokenizer_identity(tokenizer: PreTrainedTokenizerBase) -> str | None:
    """A digest of the fast tokenizer's whole definition (vocabulary, merges, normalizer,
    added tokens, post-processor) and its pad token, which we may have set."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    # transformers sets truncation and padding on the backend at every call; they are
    # not part of the definition, and the next call sets them again.
    backend.no_truncation()
    backend.no_padding()
    definition = backend.to_str() + f"|{type(tokenizer).__name__}|pad={tokenizer.pad_token_id}"
    return hashlib.sha256(definition.encode()).hexdigest()


@functools.cache
def _code_identity() -> str:
    """The source of data/, every module that turns files into token ids (sources,
    splitter, encoding, this one): change one, and every cached split is made again."""
    digest = hashlib.sha256()
    data = Path(__file__).parent
    for path in sorted(data.rglob("*.py")):
        digest.update(path.relative_to(data).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


# --- on disk -------------------------------------------------------------------------


def _write(path: Path, data: EncodedSplits) -> None:
    payload: dict[str, Any] = {"label_names": data.label_names}
    for name in SPLIT_NAMES:
        items = getattr(data, name)
        payload[name] = {
            "input_ids": [item.input_ids for item in items],
            "labels": [item.label for item in items],
            "answers": [[list(a) for a in item.answers] for item in items],
        }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_entry(path, payload)
    except OSError as err:  # a read-only or full cache costs speed, never the run
        log.warning("could not cache the tokenised splits at %s: %s", path, err)


def _read(path: Path) -> EncodedSplits | None:
    try:
        payload = read_json_entry(path)
        parts = []
        for name in SPLIT_NAMES:
            split = payload[name]
            parts.append(
                [
                    Encoded(ids, label, tuple(tuple(a) for a in answers))
                    for ids, label, answers in zip(split["input_ids"], split["labels"], split["answers"], strict=True)
                ]
            )
        return EncodedSplits(list(payload["label_names"]), *parts)
    except FileNotFoundError:
        return None
    except EntryMismatch as err:
        log.warning("the cached tokenised splits %s do not hold what they were written with: %s; making them again", path, err)
        return None
    except (OSError, ValueError, KeyError, TypeError) as err:  # damaged: make it again
        log.warning("ignoring the unreadable cached splits %s (%s)", path, err)
        return None
