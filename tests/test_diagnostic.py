"""The diagnostic tasks: pairs of sentiment sentences with a cue, deterministic and
balanced; routing follows the cue, control always sentence A."""

import re
from collections import Counter

import pytest

from lora_ablate.config.schema import TaskConfig
from lora_ablate.data.diagnostic import diagnostic_examples
from lora_ablate.data.splits import Example
from lora_ablate.data.tasks import check_task_config
from lora_ablate.errors import ConfigError

PATTERN = re.compile(r"A: (.*) B: (.*) Cue: ([AB])")


def sentences(n_pos: int = 30, n_neg: int = 26) -> list[Example]:
    return [Example(f"good sentence {i}.", 1) for i in range(n_pos)] + [Example(f"bad sentence {i}.", 0) for i in range(n_neg)]


@pytest.mark.parametrize("kind", ["routing", "control"])
def test_labels_follow_the_cue_or_sentence_a(kind):
    source = sentences()
    truth = {e.text: e.label for e in source}
    examples = diagnostic_examples(source, kind, data_seed=7)
    assert len(examples) == 26  # one pair per sentence of the smaller class
    used = []
    for example in examples:
        a, b, cue = PATTERN.fullmatch(example.text).groups()
        assert truth[a] != truth[b]  # opposite sentiments, so the cue decides
        expected = truth[a] if kind == "control" or cue == "A" else truth[b]
        assert example.label == expected
        used += [a, b]
    assert len(used) == len(set(used))  # no sentence in two examples
    combos = Counter((truth[PATTERN.fullmatch(e.text).group(1)], PATTERN.fullmatch(e.text).group(3)) for e in examples)
    assert sorted(combos.values()) == [6, 6, 7, 7]  # 26 examples dealt over four combinations
    assert abs(sum(e.label for e in examples) - 13) <= 1


def test_same_inputs_for_both_tasks_and_deterministic_by_seed():
    source = sentences()
    routing = diagnostic_examples(source, "routing", data_seed=3)
    control = diagnostic_examples(source, "control", data_seed=3)
    assert [e.text for e in routing] == [e.text for e in control]
    assert routing == diagnostic_examples(list(reversed(source)), "routing", data_seed=3)
    assert [e.text for e in routing] != [e.text for e in diagnostic_examples(source, "routing", data_seed=4)]


def test_unknown_subset_is_a_config_error():
    with pytest.raises(ConfigError, match="routing, control"):
        check_task_config(TaskConfig(name="diag_x", source="diagnostic", subset="steering"))


def test_real_tasks_split_balanced():
    from lora_ablate.data.tasks import load_task

    for kind in ("routing", "control"):
        task = load_task(TaskConfig(name=f"diag_{kind}", source="diagnostic", subset=kind))
        assert (len(task.validation), len(task.test)) == (500, 2000)
        for split in (task.train, task.validation, task.test):
            counts = Counter(e.label for e in split)
            assert abs(counts[0] - counts[1]) <= 1
        assert all(PATTERN.fullmatch(e.text) for e in task.test)
