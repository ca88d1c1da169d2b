"""`task.source=diagnostic`: pairs of marked Rotten Tomatoes sentences (data/diagnostic.py
makes them); the sentences shown alone go to the training split only."""

import functools

from lora_ablate.config.schema import TaskConfig, TaskSource
from lora_ablate.data.diagnostic import GENERATOR_VERSION, KINDS, DiagnosticExamples, diagnostic_examples
from lora_ablate.data.sources.base import RawExamples, Source, fixed_names
from lora_ablate.data.sources.vader import VADER_LABELS, VADER_SDIST, parse_vader, vader_path
from lora_ablate.errors import ConfigError


class DiagnosticSource(Source):
    kind = TaskSource.diagnostic

    def check(self, cfg: TaskConfig) -> None:
        if cfg.subset not in KINDS:
            raise ConfigError(f"task.subset={cfg.subset!r} is not a diagnostic task; valid subsets are {', '.join(KINDS)}.")

    def label_names(self, cfg: TaskConfig) -> list[str]:
        return fixed_names(cfg, VADER_LABELS, "the diagnostic tasks")

    def identity(self, cfg: TaskConfig) -> str:
        return f"diagnostic:{VADER_SDIST.sha256}:{cfg.subset}:v{GENERATOR_VERSION}"

    def load(self, cfg: TaskConfig) -> RawExamples:
        made = _diagnostic(cfg.subset, cfg.data_seed)
        return RawExamples(self.label_names(cfg), made.pairs, made.alone)


SOURCE = DiagnosticSource()


@functools.lru_cache(maxsize=2)
def _diagnostic(subset: str, data_seed: int) -> DiagnosticExamples:
    return diagnostic_examples(parse_vader(vader_path("movieReviewSnippets")), subset, data_seed)
