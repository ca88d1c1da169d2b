"""The still-improving rule on hand-made validation curves (tolerance = binomial SE)."""

import math

import pytest

from lora_ablate.convergence import Convergence, convergence, standard_error

KEY = "val/accuracy"


def bits(correct: int, n: int) -> list[float]:
    return [1.0] * correct + [0.0] * (n - correct)


def curve(*points: tuple[int, float], key: str = KEY) -> list[dict[str, float]]:
    return [{"step": s, key: v} for s, v in points]


def test_standard_error_is_binomial_for_correctness_bits():
    # 400 of 500 right: sqrt(0.8 * 0.2 / 500) with the n-1 variance.
    expected = math.sqrt(0.8 * 0.2 * 500 / 499 / 500)
    assert standard_error(bits(400, 500)) == pytest.approx(expected, rel=1e-12)


def test_a_late_plateau_leaver_is_still_improving():
    # q's seed that sits at chance until late: 0.50 until step 75, 0.77 at 100.
    result = convergence(curve((25, 0.50), (50, 0.51), (75, 0.62)), final_step=100, key=KEY,
                         final_value=0.77, per_example=bits(385, 500))
    assert result.still_improving is True
    assert result.reference_step == 75 and result.gain == pytest.approx(0.15)


def test_a_flat_end_within_sampling_error_is_not_improving():
    se = math.sqrt(0.8 * 0.2 / 500)  # ~0.018
    result = convergence(curve((100, 0.70), (200, 0.792)), final_step=300, key=KEY,
                         final_value=0.80, per_example=bits(400, 500))
    assert result.still_improving is False
    assert result.gain == pytest.approx(0.008) and result.gain < se


def test_the_best_earlier_point_is_the_reference_not_the_last():
    # A dip at step 200 does not make the end look like progress.
    result = convergence(curve((100, 0.80), (200, 0.74)), final_step=300, key=KEY,
                         final_value=0.805, per_example=bits(402, 500))
    assert result.reference_step == 100 and result.still_improving is False


def test_lower_is_better_metrics_count_a_fall_as_gain():
    losses = [0.3, 0.5, 0.7, 0.9] * 50  # sd ~0.22, SE ~0.016 over 200 examples
    result = convergence(curve((50, 0.80), (100, 0.70), key="val/loss"), final_step=200, key="val/loss",
                         final_value=0.60, per_example=losses, higher_is_better=False)
    assert result.still_improving is True and result.gain == pytest.approx(0.10)


def test_no_curve_before_the_last_quarter_is_not_known():
    assert convergence([], final_step=100, key=KEY, final_value=0.8,
                       per_example=bits(400, 500)).still_improving is None
    # eval at step 80 of 100 lies inside the last quarter: nothing to compare with.
    assert convergence(curve((80, 0.7)), final_step=100, key=KEY, final_value=0.8,
                       per_example=bits(400, 500)).still_improving is None


def test_round_trip():
    result = Convergence(True, 0.05, 0.018, 75)
    assert Convergence.from_dict(result.to_dict()) == result
    assert Convergence.from_dict(None) is None
