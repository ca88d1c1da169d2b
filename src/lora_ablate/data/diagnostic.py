"""Diagnostic tasks that separate *where the model looks* from *what it reads*.

Both tasks pair two Rotten Tomatoes sentences of opposite sentiment (the `rt_sentiment`
corpus, each sentence used once) and add a cue naming one of them:

    A: <sentence 1> B: <sentence 2> Cue: B

- `routing`: the label is the sentiment of the sentence the cue names. The same sentence
  is the answer in one example and the distractor in another, so the model has to change
  where it looks depending on the cue token.
- `control`: the same inputs, the label is always the sentiment of sentence A. Reading
  position A suffices; the cue is noise.

Hypothesis: matrices that move attention (q, k) help routing more than control; matrices
that change content (v, o, FFN) help both alike. The routing-minus-control gap per target
set measures that.

Deterministic given data_seed; labels exactly balanced (the four combinations of A's
sentiment and the cue are dealt in turn); no sentence appears in two examples, so no
test sentence is ever trained on.
"""

import random

from lora_ablate.data.splits import Example, deduplicate

KINDS = ("routing", "control")
LABEL_NAMES = ["negative", "positive"]
GENERATOR_VERSION = 1  # bump when the examples made from the same seed change


def diagnostic_examples(sentences: list[Example], kind: str, data_seed: int) -> list[Example]:
    """Paired examples from sentiment-labelled sentences (0 negative, 1 positive)."""
    if kind not in KINDS:
        raise ValueError(f"unknown diagnostic task {kind!r}; valid: {', '.join(KINDS)}")
    rng = random.Random(f"diagnostic:{data_seed}")  # same pairs for routing and control
    unique = sorted(deduplicate(sentences), key=lambda e: e.text)
    positive = [e.text for e in unique if e.label == 1]
    negative = [e.text for e in unique if e.label == 0]
    rng.shuffle(positive)
    rng.shuffle(negative)
    examples = []
    for i, (pos, neg) in enumerate(zip(positive, negative)):
        a_positive, cue = (i % 2 == 0), "A" if (i // 2) % 2 == 0 else "B"  # four combinations in turn
        a, b = (pos, neg) if a_positive else (neg, pos)
        a_label = int(a_positive)
        label = a_label if kind == "control" or cue == "A" else 1 - a_label
        examples.append(Example(f"A: {a} B: {b} Cue: {cue}", label))
    return examples
