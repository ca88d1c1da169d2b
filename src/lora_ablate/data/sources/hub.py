"""`task.source=hub`: a Hugging Face hub data set (needs the optional `datasets`); its
labelled splits are pooled and split again like every other source. SFT tasks read it
through the same row functions as local files (sources/sft_rows.py)."""

import logging
from typing import Any

from lora_ablate.config.schema import TaskConfig, TaskSource
from lora_ablate.data.sft import SftExample
from lora_ablate.data.sources.base import RawExamples, Source, fixed_names
from lora_ablate.data.sources.rows import Row, columns, labelled_examples
from lora_ablate.data.sources.sft_rows import check_columns, read_columns, sft_examples
from lora_ablate.data.splits import Example
from lora_ablate.errors import ConfigError

log = logging.getLogger(__name__)


class HubSource(Source):
    """No identity: a data set at an unpinned revision can change, so its tokenised splits
    stay in the process."""

    kind = TaskSource.hub

    def check(self, cfg: TaskConfig) -> None:
        if not cfg.hub_id:
            raise ConfigError("task.hub_id is not set, but task.source='hub' needs it; pass e.g. task.hub_id=glue task.hub_config=sst2.")

    def load(self, cfg: TaskConfig) -> RawExamples:
        splits = _load_dataset(cfg)
        rows = [row for name in sorted(splits) for row in _hub_rows(splits[name], name, cfg)]
        feature = splits[sorted(splits)[0]].features.get(cfg.label_column)
        if getattr(feature, "names", None) is None:
            return RawExamples(*labelled_examples(rows, cfg))
        # ClassLabel ids; -1 marks unlabelled rows (the GLUE test splits).
        texts, pairs, labels = columns(rows, cfg)
        names = fixed_names(cfg, list(feature.names), f"hub dataset {cfg.hub_id!r}")
        return RawExamples(names, [Example(t, v, p) for t, p, (_, v) in zip(texts, pairs, labels) if v >= 0])

    def load_sft(self, cfg: TaskConfig) -> list[SftExample]:
        """Every split's rows; a row without a completion (a split whose answers are held
        back) is unlabelled, and left out like a hidden classification label."""
        splits = _load_dataset(cfg)
        data_name = f"hub dataset {cfg.hub_id!r}" + (f" (config {cfg.hub_config!r})" if cfg.hub_config else "")
        wanted = read_columns(cfg)
        rows: list[Row] = []
        for name in sorted(splits):
            split = splits[name]
            check_columns(cfg, list(split.column_names), data_name, f"split {name!r}")
            data = {c: list(split[c]) for c in wanted}  # whole columns: much faster than row dicts
            rows += [(f"row {i + 1} of split {name!r} of {cfg.hub_id!r}", {c: data[c][i] for c in wanted})
                     for i in range(len(split))]
        labelled = rows if cfg.messages_column else [row for row in rows if _has_text(row[1][cfg.completion_column])]
        if len(labelled) < len(rows):
            log.info("%s: left out %d rows without a completion (task.completion_column=%r)", data_name,
                     len(rows) - len(labelled), cfg.completion_column)
        return sft_examples(labelled, cfg, data_name)


SOURCE = HubSource()


def _load_dataset(cfg: TaskConfig) -> Any:
    try:
        import datasets  # optional: only hub tasks need it
    except ImportError as err:
        raise ConfigError(
            f"task.source='hub' (task {cfg.name!r}) needs the `datasets` library, which is not "
            "installed; run `pip install datasets`, or use a packaged or local task."
        ) from err
    try:
        # No dataset loading scripts (datasets >= 4 runs none and ignores a False here).
        return datasets.load_dataset(cfg.hub_id, cfg.hub_config, trust_remote_code=False)
    except Exception as err:  # network, unknown id or config: all the user's to fix
        first = str(err).strip().split("\n")[0]
        raise ConfigError(
            f"Could not load hub dataset task.hub_id={cfg.hub_id!r}, task.hub_config={cfg.hub_config!r} "
            f"({type(err).__name__}: {first}); check the names and the network, or export the data "
            "to a file and use task=local."
        ) from err


def _has_text(value: Any) -> bool:
    return value is not None and (not isinstance(value, str) or bool(value.strip()))


def _hub_rows(split: Any, name: str, cfg: TaskConfig) -> list[Row]:
    """The split's rows as records (empty texts, which a few hub rows have, skipped)."""
    wanted = [c for c in (cfg.text_column, cfg.text_pair_column, cfg.label_column) if c]
    if not set(wanted) <= set(split.column_names):
        return [(f"split {name!r} of {cfg.hub_id!r}", dict.fromkeys(split.column_names))]  # columns() explains
    data = {c: list(split[c]) for c in wanted}  # whole columns: much faster than row dicts
    texts = [c for c in (cfg.text_column, cfg.text_pair_column) if c]
    rows = [(f"row {i + 1} of split {name!r}", {c: data[c][i] for c in wanted}) for i in range(len(split))]
    return [row for row in rows if all(isinstance(row[1][c], str) and row[1][c].strip() for c in texts)]
