"""`analyze`: every analysis of a completed run, on bounded probe and evaluation subsets
of the test split, timed, compact numbers for the record and the singular vectors beside
it in `analysis.safetensors`.

Subsets: the probes use the first `probe_size` test examples; the merge curve and
attention patching the first `eval_size`. The merge curve's s=1 point is the run's own
test predictions on those examples (the same evaluation, not a re-run), so it equals the
run's test metric restricted to them; s=0 comes from the patching pass's base predictions
(the same model: the update at weight 0, the trained head kept).

An SFT run (task.format=sft) is analysed alike, scored by its completion tokens: the merge
curve and patching report `loss` (lower is better) or `token_accuracy`, the task's metric
when the scores give it (analysis/sft_scores.py), and the record states the metric's direction.
"""

import logging
import math
import time
from collections.abc import Callable
from pathlib import Path

from safetensors.torch import save

from lora_ablate.analysis.attention_tap import PROBE_ATTENTION
from lora_ablate.analysis.lora_modules import adapted_modules
from lora_ablate.analysis.merges import CurvePoint, merge_curve
from lora_ablate.analysis.predict import metric
from lora_ablate.analysis.probes import attention_patching, shifts
from lora_ablate.analysis.sft_scores import analysis_metric, difference_standard_error, first, metric_value
from lora_ablate.analysis.updates import update_analysis
from lora_ablate.config.metrics import higher_is_better
from lora_ablate.config.schema import RunConfig, TaskFormat
from lora_ablate.files import write_atomic
from lora_ablate.plan.layout import Plan
from lora_ablate.records import ExampleLosses
from lora_ablate.record_analysis import (
    ANALYSIS_VERSION, VECTORS_NAME, Analysis, MergeCurve, ModuleAnalysis, Patching,
)
from lora_ablate.run.loop import Session

log = logging.getLogger(__name__)


def analyze(session: Session, plan: Plan, cfg: RunConfig, *, run_dir: Path | None = None,
            test_predicted: list[int] | None = None, test_losses: ExampleLosses | None = None) -> tuple[Analysis, float]:
    """(the record's `analysis` section, seconds it took). `test_predicted` (classification)
    or `test_losses` (sft): the run's test evaluation in split order (s=1 of the merge curve);
    evaluated here when None. An analysis that fails leaves the trained run completed: the
    section then holds the error."""
    started = time.perf_counter()
    try:
        return _analyze(session, plan, cfg, run_dir, test_predicted, test_losses, started)
    except Exception as err:  # noqa: BLE001 (the run itself succeeded; say why the analysis did not)
        log.warning("analysis failed: %s: %s", type(err).__name__, err)
        return Analysis(version=ANALYSIS_VERSION, error=f"{type(err).__name__}: {err}"), time.perf_counter() - started


def _analyze(session: Session, plan: Plan, cfg: RunConfig, run_dir: Path | None, test_predicted: list[int] | None,
             test_losses: ExampleLosses | None, started: float) -> tuple[Analysis, float]:
    settings = cfg.analysis
    sft = session.task_format == TaskFormat.sft
    modules = adapted_modules(session.model, plan.modules)
    seconds: dict[str, float] = {}

    clock = time.perf_counter()
    rows, tensors = update_analysis(modules, settings.top_k)
    if run_dir is not None:
        write_atomic(Path(run_dir) / VECTORS_NAME, save(tensors, metadata={"top_k": str(settings.top_k)}))
    seconds["updates"] = time.perf_counter() - clock

    clock = time.perf_counter()
    probe_items = session.test_items[: settings.probe_size]
    shift = shifts(session, modules, probe_items)
    modules_analysis = [ModuleAnalysis(**row, content_shift=shift.content[row["name"]]) for row in rows]
    seconds["shifts"] = time.perf_counter() - clock

    clock = time.perf_counter()
    items = session.test_items[: settings.eval_size]
    patch = attention_patching(session, modules, items)
    seconds["patching"] = time.perf_counter() - clock

    clock = time.perf_counter()
    known: dict[float, CurvePoint] = {}
    if sft and test_losses is not None:
        known[1.0] = CurvePoint(1.0, losses=first(test_losses, len(items)))
    elif not sft and test_predicted is not None:
        known[1.0] = CurvePoint(1.0, list(test_predicted[: len(items)]))
    if patch.available:
        known[0.0] = CurvePoint(0.0, losses=patch.base) if sft else CurvePoint(0.0, patch.base)
    curve = merge_curve(session, modules, items, settings.merge_weights, known)
    seconds["merge_curve"] = time.perf_counter() - clock

    if sft:
        name = analysis_metric(cfg.task.metric)
        value = _sft_value(name)
    else:
        name = cfg.task.metric
        value = _classification_value(session, [item.label for item in items], name)
    values = {p.weight: value(p) for p in curve}
    diffs = [p.merge_max_abs_diff for p in curve if p.merge_max_abs_diff is not None]
    full = next((p for p in curve if p.weight == 1.0), None)
    analysis = Analysis(
        version=ANALYSIS_VERSION,
        task_format=str(session.task_format),
        probe_size=len(probe_items),
        eval_size=len(items),
        attention_implementation=f"{PROBE_ATTENTION} (eager arithmetic, fp32 softmax)" if patch.available else None,
        effective_rank_definition="exp(entropy of singular values normalised to sum 1)",
        modules=modules_analysis,
        vectors=VECTORS_NAME if run_dir is not None else None,
        attention_shift=None if shift.attention is None else list(shift.attention),
        patching=_patching(patch, full, value, name, len(items), sft),
        merge_curve=MergeCurve(
            metric=name,
            weights=[p.weight for p in curve],
            values=[values[p.weight] for p in curve],
            merge_max_abs_diff=max(diffs) if diffs else None,
            higher_is_better=higher_is_better(name),
        ),
        seconds=seconds,
    )
    return analysis, time.perf_counter() - started


Value = Callable[[CurvePoint], float]  # a curve point's (or a patching pass's) metric


def _classification_value(session: Session, labels: list[int], name: str) -> Value:
    return lambda point: metric(session, point.predicted, labels, name)


def _sft_value(name: str) -> Value:
    return lambda point: metric_value(point.losses, name)


def _patching(patch, full: CurvePoint | None, value: Value, name: str, n: int, sft: bool) -> Patching:
    if not patch.available:
        return Patching(available=False, note="the model's attention does not go through transformers' attention interface")
    as_point = (lambda outputs: CurvePoint(0.0, losses=outputs)) if sft else (lambda outputs: CurvePoint(0.0, outputs))
    base, patched = value(as_point(patch.base)), value(as_point(patch.patched))
    full_value = None if full is None else value(full)
    gain = None if full_value is None else full_value - base
    if gain is None:
        threshold = None
    elif sft:  # two standard errors of the paired difference, example by example
        threshold = 2 * difference_standard_error(full.losses, patch.base, name)
    else:  # two binomial standard errors, and at least one example's worth
        threshold = max(2 * math.sqrt(max(full_value, 1e-9) * (1 - full_value) / max(n, 1)), 1.0 / max(n, 1))
    share = None if gain is None or abs(gain) <= threshold else (patched - base) / gain
    return Patching(
        available=True, metric=name, n=n, base=base, full=full_value, patched=patched,
        gain=gain, attention_share=1.0 - share if share is not None else None,
        surviving_share=share,
        probe_max_abs_diff=patch.probe_max_abs_diff,
        higher_is_better=higher_is_better(name),
        note=_PATCHING_NOTE + (_SFT_PATCHING_NOTE.format(name=name) if sft else ""),
    )


_PATCHING_NOTE = ("surviving_share = (patched - base) / (full - base): the gain kept when every layer attends as the "
                  "base model does; attention_share = 1 - surviving_share; both null when the gain is within two "
                  "standard errors of zero")
_SFT_PATCHING_NOTE = ("; SFT: every pass scored by the completion tokens' {name} on the same examples (a ratio of "
                      "differences, so the shares read alike whichever direction is better), the standard error "
                      "that of the paired difference (delta method over examples)")
