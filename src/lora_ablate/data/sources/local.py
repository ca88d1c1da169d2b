"""`task.source=local`: the user's CSV (with a header row) or JSON Lines file."""

import codecs
import csv
import functools
import io
import json
from pathlib import Path
from typing import Any

from lora_ablate.config.schema import TaskConfig, TaskSource
from lora_ablate.data.sft import SftExample
from lora_ablate.data.sources.base import RawExamples, Source
from lora_ablate.data.sources.rows import Row, labelled_examples
from lora_ablate.data.sources.sft_rows import check_columns, sft_examples
from lora_ablate.errors import ConfigError

LOCAL_SUFFIXES = (".csv", ".jsonl", ".json")
MAX_LOCAL_BYTES = 2 * 2**30  # read whole into memory (a few times its size while parsing)
LOCAL_MEMO_SIZE = 4  # parsed local files kept per process: a sweep's checks and runs share them


class LocalSource(Source):
    kind = TaskSource.local

    def check(self, cfg: TaskConfig) -> None:
        if not cfg.path:
            raise ConfigError("task.path is not set, but task=local reads your own file; pass task.path=/path/to/data.csv (or .jsonl).")

    def identity(self, cfg: TaskConfig) -> str | None:
        """The file's path, size and modification time."""
        path = Path(cfg.path).expanduser().resolve()
        try:
            stat = path.stat()
        except OSError:
            return None  # load says what is wrong with it
        return f"local:{path}:{stat.st_size}:{stat.st_mtime_ns}"

    def describe(self, cfg: TaskConfig) -> str:
        return f"task.path={cfg.path!r}"

    def load(self, cfg: TaskConfig) -> RawExamples:
        rows, path = self._rows(cfg)
        if path.suffix.lower() == ".csv":
            _check_header(rows[0][1], cfg, path)
        return RawExamples(*labelled_examples(rows, cfg))

    def load_sft(self, cfg: TaskConfig) -> list[SftExample]:
        rows, path = self._rows(cfg)
        if path.suffix.lower() == ".csv":
            if cfg.messages_column:
                raise ConfigError(f"task.messages_column={cfg.messages_column!r} needs a .jsonl file (a chat is a list "
                                  f"of messages, which a CSV cell cannot hold); {cfg.path!r} is a CSV file.")
            check_columns(cfg, list(rows[0][1]), path.name, "its header, line 1")  # the header names the columns
        return sft_examples(rows, cfg, path.name)

    def _rows(self, cfg: TaskConfig) -> tuple[tuple[Row, ...], Path]:
        """The file's rows after the checks every local task makes (extension, size, encoding, not empty)."""
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
        rows = local_rows(str(path.resolve()), stat.st_size, stat.st_mtime_ns, cfg.encoding)
        if not rows:
            raise ConfigError(f"task.path={cfg.path!r} holds no examples; expected one example per row/line.")
        return rows, path


def _check_header(first_row: dict[str, Any], cfg: TaskConfig, path: Path) -> None:
    """A CSV's columns come from its header: name line 1, not the first data row."""
    settings = {"task.text_column": cfg.text_column, "task.label_column": cfg.label_column,
                "task.text_pair_column": cfg.text_pair_column}
    for setting, column in settings.items():
        if column is not None and column not in first_row:
            raise ConfigError(
                f"{setting}={column!r} is not a column of the data (the header, line 1 of {path}, has: "
                f"{', '.join(map(str, first_row)) or 'nothing'}); set {setting} to one of those."
            )


SOURCE = LocalSource()


@functools.lru_cache(maxsize=LOCAL_MEMO_SIZE)
def local_rows(path: str, size: int, mtime_ns: int, encoding: str) -> tuple[Row, ...]:
    """The file's rows, parsed once per process for each (path, size, mtime) seen: a
    sweep's checks and runs share them, and an edited file is read again."""
    text = decode_local(Path(path), encoding)
    return tuple(_csv_rows(Path(path), text) if path.lower().endswith(".csv") else _json_rows(Path(path), text))


def decode_local(path: Path, encoding: str) -> str:
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
