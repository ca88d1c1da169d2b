"""`task.source=vader`: the ground-truth corpora of the VADER paper (Hutto and Gilbert,
ICWSM 2014), shipped in the vaderSentiment sdist."""

import math
from pathlib import Path

from lora_ablate.cache.pins import PackagedAsset
from lora_ablate.cache.unpack import fetch_unpacked, unpacked
from lora_ablate.config.schema import TaskConfig, TaskSource
from lora_ablate.data.sources.base import RawExamples, Source, fixed_names
from lora_ablate.data.sources.text import read_text, unescape
from lora_ablate.data.splits import Example, normalised
from lora_ablate.errors import ConfigError

VADER_SDIST = PackagedAsset(
    "vaderSentiment==3.3.2",
    "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9",
    source=True,
)  # vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz
# File stems of <subset>_GroundTruth.txt in hutto_ICWSM_2014.tar.gz.
VADER_SUBSETS = ("amazonReviewSnippets", "movieReviewSnippets", "nytEditorialSnippets", "tweets")
VADER_LABELS = ["negative", "positive"]


class VaderSource(Source):
    kind = TaskSource.vader

    def check(self, cfg: TaskConfig) -> None:
        if cfg.subset not in VADER_SUBSETS:
            raise ConfigError(f"task.subset={cfg.subset!r} is not a VADER corpus; valid subsets are {', '.join(VADER_SUBSETS)}.")

    def label_names(self, cfg: TaskConfig) -> list[str]:
        return fixed_names(cfg, VADER_LABELS, "the VADER corpora")

    def identity(self, cfg: TaskConfig) -> str:
        return f"vader:{VADER_SDIST.sha256}:{cfg.subset}"

    def load(self, cfg: TaskConfig) -> RawExamples:
        return RawExamples(self.label_names(cfg), parse_vader(vader_path(cfg.subset)))


SOURCE = VaderSource()


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
    for number, line in enumerate(read_text(path).split("\n"), 1):  # not splitlines: U+2028 is text
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
            examples.append(Example(normalised(unescape(fields[2])), int(score > 0)))
    return examples


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan
