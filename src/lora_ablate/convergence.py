"""Whether a run was still improving when training ended, so a reader can tell "this target
set is worse" from "this target set is slower".

The rule: compare the final validation metric with the best validation point reached before
the last quarter of training. If the final value beats it, in the metric's direction, by more
than one standard error of the validation metric (the spread of its per-example values over
√n validation examples), the run was still improving. The best earlier point, not the one at
exactly 3/4, so that one noisy dip does not count as progress. A run without validation
points before the last quarter (train.eval_every=0, or too few steps) is "not known".
"""

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

LATE_FRACTION = 0.75  # the last quarter of training is the window that must show no gain
RULE = ("still improving: the final validation metric beats the best point before the last "
        "quarter of training by more than one standard error of the validation metric")


@dataclass(frozen=True)
class Convergence:
    still_improving: bool | None  # None: not known (no validation curve)
    gain: float | None = None  # final − best earlier point, positive = better
    tolerance: float | None = None  # one standard error of the validation metric
    reference_step: int | None = None  # the step of the best earlier point

    def to_dict(self) -> dict[str, float | int | bool | None]:
        return {"still_improving": self.still_improving, "gain": self.gain,
                "tolerance": self.tolerance, "reference_step": self.reference_step}

    @classmethod
    def from_dict(cls, data: Mapping[str, object] | None) -> "Convergence | None":
        if not isinstance(data, Mapping):
            return None
        improving = data.get("still_improving")
        step = data.get("reference_step")
        return cls(None if improving is None else bool(improving), _float(data.get("gain")),
                   _float(data.get("tolerance")), None if step is None else int(step))  # type: ignore[arg-type]


def _float(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]


def standard_error(per_example: Sequence[float]) -> float:
    """Standard error of a mean over per-example values (0/1 correctness gives the binomial
    √(p(1−p)/n)); NaN for fewer than two values."""
    n = len(per_example)
    if n < 2:
        return math.nan
    mean = sum(per_example) / n
    variance = sum((x - mean) ** 2 for x in per_example) / (n - 1)
    return math.sqrt(variance / n)


def convergence(history: Sequence[Mapping[str, float]], *, final_step: int, key: str,
                final_value: float, per_example: Sequence[float],
                higher_is_better: bool = True) -> Convergence:
    """Apply the rule to a validation curve (`history` points with "step" and `key`) that
    ends at `final_step` with `final_value`, whose per-example values give the tolerance."""
    cutoff = LATE_FRACTION * final_step
    earlier = [p for p in history
               if key in p and p.get("step", math.inf) <= cutoff and math.isfinite(p[key])]
    tolerance = standard_error(per_example)
    if not earlier or not math.isfinite(final_value) or not math.isfinite(tolerance):
        return Convergence(None)
    sign = 1.0 if higher_is_better else -1.0
    reference = max(earlier, key=lambda p: sign * p[key])
    gain = sign * (final_value - reference[key])
    return Convergence(gain > tolerance, gain, tolerance, int(reference["step"]))
