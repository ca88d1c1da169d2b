"""Diagnostic tasks that separate *where the model looks* from *what it reads*.

Both tasks pair two Rotten Tomatoes sentences of opposite sentiment (the `rt_sentiment`
corpus, each sentence used once); a marker in front of each names the one to read:

    Read: <sentence 1> Skip: <sentence 2>      or      Skip: <sentence 1> Read: <sentence 2>

- `routing`: the label is the sentiment of the sentence marked `Read`. Half the time it
  comes first, half second, so the model has to look where the marker says; the overall
  sentiment of the input is uninformative (the two sentences disagree).
- `control`: the same inputs, the label is always the sentiment of the first sentence.
  Reading a fixed position suffices; the markers are noise.

Validation and test hold pairs only, so chance is 0.50 on both tasks. The training split
also holds sentences shown alone, `Read: <sentence>`, labelled with their sentiment (the
same for both tasks: the only sentence is the first and the marked one).

Hypothesis: matrices that move attention (q, k) help routing more than control; matrices
that change content (v, o, FFN) help both alike. The routing-minus-control gap per target
set measures that.

Why sentences are also shown alone: on pairs alone no input feature correlates with the
label until the model already routes, and every pairs-only layout tried stayed at chance
(0.50 on test pairs; MiniLM, batch 32, lr 3e-3, 100 to 300 steps). The single sentences
teach the head what sentiment is; then looking more at the marked sentence lowers the loss
from the first steps (qv 0.71, qkv_ffn 0.69 on test pairs after 100 steps, seed 0).

Deterministic given data_seed; pair labels exactly balanced (the four combinations of the
first sentence's sentiment and the marked position are dealt in turn); no sentence
appears in two examples, so no test sentence is ever trained on.
"""

import random
from dataclasses import dataclass

from lora_ablate.data.splits import Example, deduplicate

KINDS = ("routing", "control")
LABEL_NAMES = ["negative", "positive"]
GENERATOR_VERSION = 2  # bump when the examples made from the same seed change
READ, SKIP = "Read", "Skip"
ALONE_SHARE = 0.2  # of each class's sentences, shown alone in training rather than paired


@dataclass(frozen=True)
class DiagnosticExamples:
    pairs: list[Example]  # split into train, validation and test
    alone: list[Example]  # one marked sentence each; training only


def diagnostic_examples(sentences: list[Example], kind: str, data_seed: int) -> DiagnosticExamples:
    """Paired and single examples from sentiment-labelled sentences (0 negative, 1 positive)."""
    if kind not in KINDS:
        raise ValueError(f"unknown diagnostic task {kind!r}; valid: {', '.join(KINDS)}")
    rng = random.Random(f"diagnostic:{data_seed}")  # same pairs for routing and control
    unique = sorted(deduplicate(sentences), key=lambda e: e.text)
    positive = [e.text for e in unique if e.label == 1]
    negative = [e.text for e in unique if e.label == 0]
    rng.shuffle(positive)
    rng.shuffle(negative)
    n_alone = int(ALONE_SHARE * min(len(positive), len(negative)))
    alone = [Example(f"{READ}: {text}", label)
             for texts, label in ((positive[:n_alone], 1), (negative[:n_alone], 0)) for text in texts]
    pairs = []
    for i, (pos, neg) in enumerate(zip(positive[n_alone:], negative[n_alone:])):
        first_positive, read_first = (i % 2 == 0), (i // 2) % 2 == 0  # four combinations in turn
        first, second = (pos, neg) if first_positive else (neg, pos)
        first_label = int(first_positive)
        label = first_label if kind == "control" or read_first else 1 - first_label
        marks = (READ, SKIP) if read_first else (SKIP, READ)
        pairs.append(Example(f"{marks[0]}: {first} {marks[1]}: {second}", label))
    return DiagnosticExamples(pairs, alone)
