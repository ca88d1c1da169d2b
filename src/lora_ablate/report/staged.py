"""The pre-specified two-stage (adaptive seeds) design, as pure functions.

Stage 1 runs `stage1_seeds` seeds of every target set and tests the family by Holm at
α1 = `alpha_stage1`. A comparison that is not resolved there and whose unadjusted stage-1 p
is below `continue_p` continues: its target set (and the baseline) get seeds up to
`max_seeds`. The final test is Holm at α2 = α − α1 over the whole family, the continued
comparisons on all their seeds and every other member at p = 1.

Family-wise error ≤ α1 + α2 = α whatever the dependence between the stages: a false
conclusion is a stage-1 one (Holm at α1) or a final one (Holm at α2, whose final p-values
stay valid because a member that did not continue has p = 1). Both stages score the same
test set, so a weighted inverse-normal combination of the stages' p-values, which needs
independent stages, would not be valid here.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from lora_ablate.report.family import FamilyResult, PairedDifference, family_test


@dataclass(frozen=True)
class StagedDesign:
    """stage1_seeds → max_seeds for comparisons still open and promising at stage 1."""

    stage1_seeds: int = 5
    max_seeds: int = 10
    alpha_stage1: float = 0.01
    continue_p: float = 0.2
    alpha: float = 0.05

    def __post_init__(self) -> None:
        problems = []
        if not (isinstance(self.stage1_seeds, int) and self.stage1_seeds >= 2):
            problems.append(f"stage1_seeds must be an integer ≥ 2 (a t-test needs two "
                            f"seeds), got {self.stage1_seeds!r}")
        if not (isinstance(self.max_seeds, int) and self.max_seeds >= self.stage1_seeds):
            problems.append(f"max_seeds must be an integer ≥ stage1_seeds "
                            f"({self.stage1_seeds!r}), got {self.max_seeds!r}")
        if not 0 < self.alpha < 1:
            problems.append(f"alpha must lie strictly between 0 and 1, got {self.alpha!r}")
        elif not 0 < self.alpha_stage1 < self.alpha:
            problems.append(f"alpha_stage1 must lie strictly between 0 and alpha "
                            f"({self.alpha!r}), got {self.alpha_stage1!r}")
        if not 0 < self.continue_p <= 1:
            problems.append(f"continue_p must lie in (0, 1], got {self.continue_p!r}")
        if problems:
            raise ValueError("Invalid staged design: " + "; ".join(problems) + ".")

    @property
    def alpha_final(self) -> float:
        return self.alpha - self.alpha_stage1


@dataclass(frozen=True)
class StageOne:
    results: tuple[FamilyResult, ...]  # Holm at alpha_stage1, in input order
    continuing: tuple[str, ...]  # target sets that get seeds up to max_seeds


@dataclass(frozen=True)
class StagedResult:
    """A comparison's conclusion and the stage it came from (1, or 2 for a continued
    comparison); `n_seeds` is the seeds it was decided on."""

    stage: int
    result: FamilyResult

    @property
    def target_set(self) -> str:
        return self.result.target_set

    @property
    def resolved(self) -> bool:
        return self.result.resolved


def stage_one(stage1: Sequence[PairedDifference], design: StagedDesign) -> StageOne:
    """Holm at α1 over the family on the stage-1 seeds, and which comparisons continue:
    not resolved and unadjusted p < continue_p."""
    results = tuple(family_test(stage1, design.alpha_stage1))
    continuing = tuple(r.target_set for r in results
                       if not r.resolved and r.p < design.continue_p)
    return StageOne(results, continuing)


def staged_family(stage1: Sequence[PairedDifference],
                  final: Mapping[str, PairedDifference],
                  design: StagedDesign) -> list[StagedResult]:
    """Every comparison's conclusion under the design, in the order of `stage1`.
    `final` holds the all-seeds differences of (at least) the continuing target sets."""
    first = stage_one(stage1, design)
    missing = [name for name in first.continuing if name not in final]
    if missing:
        raise ValueError(f"The final test needs the all-seeds differences of every "
                         f"continuing target set; missing: {', '.join(missing)} (continuing: "
                         f"{', '.join(first.continuing)}).")
    untested = {d.target_set: PairedDifference(d.target_set, 0, float("nan"), float("nan"),
                                               float("nan"), note="did not continue")
                for d in stage1}
    family = [final[d.target_set] if d.target_set in first.continuing else untested[d.target_set]
              for d in stage1]
    second = family_test(family, design.alpha_final)
    return [StagedResult(2, late) if early.target_set in first.continuing else
            StagedResult(1, early)
            for early, late in zip(first.results, second)]


@dataclass(frozen=True)
class SeedPlan:
    """A sweep's adaptive-seeds design as its manifest records it: the stage-1 seeds (the
    sweep's own `seed` values) and the design's limits; stage 2 adds the next integers
    after the largest stage-1 seed, up to `max_seeds` seeds in all."""

    stage1_seeds: tuple[int, ...]
    max_seeds: int
    alpha_stage1: float
    continue_p: float
    alpha: float

    def __post_init__(self) -> None:
        self.design  # the design's checks, on the seeds as a count

    @property
    def design(self) -> StagedDesign:
        return StagedDesign(len(self.stage1_seeds), self.max_seeds, self.alpha_stage1,
                            self.continue_p, self.alpha)

    @property
    def new_seeds(self) -> tuple[int, ...]:
        start = max(self.stage1_seeds) + 1
        return tuple(range(start, start + self.max_seeds - len(self.stage1_seeds)))

    def to_json(self) -> dict[str, object]:
        return {"stage1_seeds": list(self.stage1_seeds), "max_seeds": self.max_seeds,
                "alpha_stage1": self.alpha_stage1, "continue_p": self.continue_p,
                "alpha": self.alpha}

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> "SeedPlan":
        return cls(tuple(int(s) for s in data["stage1_seeds"]), int(data["max_seeds"]),
                   float(data["alpha_stage1"]), float(data["continue_p"]), float(data["alpha"]))

    def sentence(self) -> str:
        d = self.design
        return (f"Adaptive seeds: stage 1 tested every target set on seeds "
                f"{', '.join(map(str, self.stage1_seeds))} by Holm at α1 = {d.alpha_stage1:g}; "
                f"a comparison unresolved there with p < {d.continue_p:g} continued to "
                f"{d.max_seeds} seeds and was tested by Holm at α2 = {d.alpha_final:g} "
                f"(family-wise error ≤ α1 + α2 = {d.alpha:g}).")
