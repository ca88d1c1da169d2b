"""The collapse rule: validation accuracy within two binomial standard errors of the
majority class's share, on either side (as the README says)."""

import math

import pytest

from lora_ablate.records import SplitPredictions
from lora_ablate.run.runner import is_collapsed


def predictions(n: int, majority: float, accuracy: float) -> SplitPredictions:
    labels = [1] * round(majority * n) + [0] * (n - round(majority * n))
    right = round(accuracy * n)
    return SplitPredictions([y if i < right else 1 - y for i, y in enumerate(labels)], labels)


@pytest.mark.parametrize("offset, collapsed", [(-3, False), (-1.5, True), (0, True),
                                               (1.5, True), (3, False)])
def test_within_two_standard_errors_on_either_side(offset, collapsed):
    n, majority = 1000, 0.6
    se = math.sqrt(majority * (1 - majority) / n)
    assert is_collapsed(predictions(n, majority, majority + offset * se)) is collapsed
