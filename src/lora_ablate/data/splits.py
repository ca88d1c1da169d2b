"""The one splitter every task goes through: de-duplicating, stratified, and fixed by
`data_seed` alone, so every target set and seed of a sweep sees the same test set and no
test text is ever trained on."""

import random
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from lora_ablate.errors import ConfigError


@dataclass(frozen=True)
class Example:
    text: str
    label: int
    text_pair: str | None = None


def split_examples(
    examples: Sequence[Example], *, train_size: int | None, val_size: int, test_size: int, data_seed: int
) -> tuple[list[Example], list[Example], list[Example]]:
    """(train, validation, test), stratified by label and fixed by `data_seed` alone.

    Duplicates (same text and pair after whitespace normalisation) are merged first and
    texts seen with conflicting labels dropped, so no test text is trained on. Each
    class is shuffled; test is carved first, then validation, then train from the rest
    (all of it when train_size is None, else a stratified prefix, so a train_size sweep
    keeps the same validation and test sets and nests its training sets). Test,
    validation and the rest hold each class within one example of its share.
    """
    check_sizes(train_size, val_size, test_size)
    unique = deduplicate(examples)
    check_fit(len(examples), len(unique), train_size, val_size, test_size)
    pools = _class_pools(unique, data_seed)
    rest_size = len(unique) - val_size - test_size
    table = allocate([len(pool) for pool in pools], [test_size, val_size, rest_size])
    test, validation, rest = [], [], []
    for pool, (n_test, n_val, _) in zip(pools, table):
        test += pool[:n_test]
        validation += pool[n_test : n_test + n_val]
        rest.append(pool[n_test + n_val :])
    if train_size is None:
        train = [example for pool in rest for example in pool]
    else:
        picks = allocate([len(pool) for pool in rest], [train_size, rest_size - train_size])
        train = [example for pool, (n, _) in zip(rest, picks) for example in pool[:n]]
    _check_train_classes(train, unique)
    splits = {"train": train, "validation": validation, "test": test}
    return tuple(_shuffled(split, data_seed, name) for name, split in splits.items())  # type: ignore[return-value]


def deduplicate(examples: Sequence[Example]) -> list[Example]:
    """One example per normalised (text, text_pair), in first-seen order; keys seen with
    more than one label are dropped entirely (we cannot tell which label is right)."""
    groups: dict[tuple[str, str], list[Example]] = {}
    for example in examples:
        groups.setdefault(_key(example), []).append(example)
    return [
        min(group, key=lambda e: (e.text, e.text_pair or ""))  # same pick whatever the input order
        for group in groups.values()
        if len({e.label for e in group}) == 1
    ]


def allocate(counts: Sequence[int], sizes: Sequence[int]) -> list[list[int]]:
    """Spread each class count over `sizes` (which add up to sum(counts)) so every cell
    is within one example of count * size / total and rows and columns add up exactly.

    Such a rounding always exists (Bacharach's controlled rounding); filling columns one
    by one, each from the rows with the most examples left to place, finds it (Ryser's
    greedy for 0/1 matrices with given margins). Ties go to the larger fractional share.
    """
    total = sum(counts)
    if sum(sizes) != total or min(sizes, default=0) < 0:
        raise ValueError(f"sizes {list(sizes)} must be non-negative and add up to {total}")
    table = [[count * size // total for size in sizes] for count in counts]
    left = [count - sum(row) for count, row in zip(counts, table)]
    for j, size in enumerate(sizes):
        need = size - sum(row[j] for row in table)
        order = sorted(range(len(counts)), key=lambda i: (-left[i], -(counts[i] * size % total), i))
        for i in order[:need]:
            if left[i] <= 0:
                raise RuntimeError(f"allocate({list(counts)}, {list(sizes)}) failed; this is a bug")
            table[i][j] += 1
            left[i] -= 1
    return table


def _key(example: Example) -> tuple[str, str]:
    pair = "\x00" if example.text_pair is None else normalised(example.text_pair)
    return normalised(example.text), pair


def normalised(text: str) -> str:
    return " ".join(unicodedata.normalize("NFC", text).split())


def _class_pools(examples: list[Example], data_seed: int) -> list[list[Example]]:
    """Each label's examples (labels in order) sorted canonically, so the input order does
    not matter, then shuffled by a generator seeded from data_seed and the label. String
    seeds are hashed with SHA-512 by `random`, so PYTHONHASHSEED plays no part."""
    pools: dict[int, list[Example]] = {}
    for example in examples:
        pools.setdefault(example.label, []).append(example)
    for label, pool in pools.items():
        pool.sort(key=lambda e: (e.text, e.text_pair is None, e.text_pair or ""))  # unique after dedup
        random.Random(f"lora-ablate/{data_seed}/pool/{label}").shuffle(pool)
    return [pools[label] for label in sorted(pools)]


def _shuffled(examples: list[Example], data_seed: int, split: str) -> list[Example]:
    out = list(examples)
    random.Random(f"lora-ablate/{data_seed}/order/{split}").shuffle(out)
    return out


def check_fit(n_raw: int, n: int, train_size: int | None, val_size: int, test_size: int, *,
              counted: str = "distinct labelled examples",
              merged: str = "removing {} duplicate or conflicting texts") -> None:
    """ConfigError when the held-out sizes leave no training data or train_size asks for more
    than is left; `counted` names what the n distinct examples are, `merged` how n_raw became n."""
    held = val_size + test_size
    dropped = f" ({n_raw:,} before {merged.format(f'{n_raw - n:,}')})" if n_raw != n else ""
    if held >= n:
        raise ConfigError(
            f"task.val_size ({val_size:,}) + task.test_size ({test_size:,}) = {held:,} leaves no "
            f"training data: the task has {n:,} {counted}{dropped}; choose sizes "
            "that add up to well under that number."
        )
    if train_size is not None and train_size > n - held:
        raise ConfigError(
            f"task.train_size={train_size:,} is more than the {n - held:,} examples left after holding "
            f"out validation ({val_size:,}) and test ({test_size:,}) from {n:,}{dropped}; use at most "
            f"{n - held:,}, or null for all of them."
        )


def _check_train_classes(train: list[Example], examples: list[Example]) -> None:
    if len({e.label for e in train}) < 2:
        counts = dict(sorted(Counter(e.label for e in examples).items()))
        raise ConfigError(
            f"The training split has a single class (label id {train[0].label}), so there is nothing to learn; "
            f"the label counts of the data are {counts}. Check task.label_column and the data, or raise task.train_size."
        )


def check_sizes(train_size: int | None, val_size: int, test_size: int) -> None:
    for name, value in (("task.train_size", train_size), ("task.val_size", val_size), ("task.test_size", test_size)):
        if value is None and name == "task.train_size":
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            also = " (or null for every example not held out)" if name == "task.train_size" else ""
            raise ConfigError(f"{name}={value!r} is not valid; it must be a positive number of examples{also}.")
