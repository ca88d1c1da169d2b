"""The diagnostic tasks: pairs of opposite-sentiment sentences behind Read/Skip markers,
deterministic and balanced; routing follows the Read marker, control always the first
sentence; sentences shown alone go to the training split only."""

import re
from collections import Counter

import pytest

from lora_ablate.config.schema import TaskConfig
from lora_ablate.data.diagnostic import ALONE_SHARE, diagnostic_examples
from lora_ablate.data.splits import Example
from lora_ablate.data.tasks import check_task_config
from lora_ablate.errors import ConfigError

PAIR = re.compile(r"(Read|Skip): (.*) (Read|Skip): (.*)")
ALONE = re.compile(r"Read: (.*)")


def sentences(n_pos: int = 40, n_neg: int = 36) -> list[Example]:
    return [Example(f"good sentence {i}.", 1) for i in range(n_pos)] + [Example(f"bad sentence {i}.", 0) for i in range(n_neg)]


@pytest.mark.parametrize("kind", ["routing", "control"])
def test_labels_follow_the_read_marker_or_the_first_sentence(kind):
    source = sentences()
    truth = {e.text: e.label for e in source}
    made = diagnostic_examples(source, kind, data_seed=7)
    n_alone = int(ALONE_SHARE * 36)  # per class, of the smaller class's 36
    assert len(made.alone) == 2 * n_alone and len(made.pairs) == 36 - n_alone
    used = []
    for example in made.pairs:
        mark1, first, mark2, second = PAIR.fullmatch(example.text).groups()
        assert {mark1, mark2} == {"Read", "Skip"}
        assert truth[first] != truth[second]  # opposite sentiments, so the marker decides
        marked = first if mark1 == "Read" else second
        assert example.label == (truth[first] if kind == "control" else truth[marked])
        used += [first, second]
    for example in made.alone:
        (text,) = ALONE.fullmatch(example.text).groups()
        assert example.label == truth[text]
        used.append(text)
    assert len(used) == len(set(used))  # no sentence in two examples
    combos = Counter((truth[PAIR.fullmatch(e.text).group(2)], PAIR.fullmatch(e.text).group(1)) for e in made.pairs)
    assert sorted(combos.values()) == [7, 7, 7, 8]  # 29 pairs dealt over four combinations in turn
    assert sum(e.label for e in made.pairs) == 15 and sum(e.label for e in made.alone) == n_alone


def test_same_inputs_for_both_tasks_and_deterministic_by_seed():
    source = sentences()
    routing = diagnostic_examples(source, "routing", data_seed=3)
    control = diagnostic_examples(source, "control", data_seed=3)
    assert [e.text for e in routing.pairs] == [e.text for e in control.pairs]
    assert routing.alone == control.alone
    assert routing.pairs != control.pairs  # the labels differ where Read marks the second sentence
    assert routing == diagnostic_examples(list(reversed(source)), "routing", data_seed=3)
    assert [e.text for e in routing.pairs] != [e.text for e in diagnostic_examples(source, "routing", data_seed=4).pairs]


def test_unknown_subset_is_a_config_error():
    with pytest.raises(ConfigError, match="routing, control"):
        check_task_config(TaskConfig(name="diag_x", source="diagnostic", subset="steering"))


def test_real_tasks_split_balanced_with_sentences_alone_in_training_only():
    from lora_ablate.data.tasks import load_task

    for kind in ("routing", "control"):
        task = load_task(TaskConfig(name=f"diag_{kind}", source="diagnostic", subset=kind))
        assert (len(task.validation), len(task.test)) == (500, 2000)
        for split in (task.train, task.validation, task.test):
            counts = Counter(e.label for e in split)
            assert abs(counts[0] - counts[1]) <= 1
        assert all(PAIR.fullmatch(e.text) for e in task.test + task.validation)
        alone = [e for e in task.train if "Skip: " not in e.text]
        assert alone and all(ALONE.fullmatch(e.text) for e in alone)
        eval_text = " ".join(e.text for e in task.test + task.validation)
        assert not any(ALONE.fullmatch(e.text).group(1) in eval_text for e in alone[:200])
