"""`analyze`: every analysis of a completed run, on bounded probe and evaluation subsets
of the test split, timed, compact numbers for the record and the singular vectors beside
it in `analysis.safetensors`.

Subsets: the probes use the first `probe_size` test examples; the merge curve and
attention patching the first `eval_size`. The merge curve's s=1 point is the run's own
test predictions on those examples (the same evaluation, not a re-run), so it equals the
run's test metric restricted to them; s=0 comes from the patching pass's base predictions
(the same model: the update at weight 0, the trained head kept).
"""

import logging
import math
import time
from pathlib import Path

from safetensors.torch import save

from lora_ablate.analysis.attention_tap import PROBE_ATTENTION
from lora_ablate.analysis.lora_modules import adapted_modules
from lora_ablate.analysis.merges import merge_curve
from lora_ablate.analysis.predict import metric
from lora_ablate.analysis.probes import attention_patching, shifts
from lora_ablate.analysis.updates import update_analysis
from lora_ablate.config.schema import RunConfig
from lora_ablate.files import write_atomic
from lora_ablate.plan.layout import Plan
from lora_ablate.record_analysis import (
    ANALYSIS_VERSION, VECTORS_NAME, Analysis, MergeCurve, ModuleAnalysis, Patching,
)
from lora_ablate.run.loop import Session

log = logging.getLogger(__name__)


def analyze(session: Session, plan: Plan, cfg: RunConfig, *, run_dir: Path | None = None,
            test_predicted: list[int] | None = None) -> tuple[Analysis, float]:
    """(the record's `analysis` section, seconds it took). `test_predicted`: the run's test
    predictions in split order (s=1 of the merge curve); evaluated here when None. An
    analysis that fails leaves the trained run completed: the section then holds the error."""
    started = time.perf_counter()
    try:
        return _analyze(session, plan, cfg, run_dir, test_predicted, started)
    except Exception as err:  # noqa: BLE001 (the run itself succeeded; say why the analysis did not)
        log.warning("analysis failed: %s: %s", type(err).__name__, err)
        return Analysis(version=ANALYSIS_VERSION, error=f"{type(err).__name__}: {err}"), time.perf_counter() - started


def _analyze(session: Session, plan: Plan, cfg: RunConfig, run_dir: Path | None, test_predicted: list[int] | None,
             started: float) -> tuple[Analysis, float]:
    settings = cfg.analysis
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
    labels = [item.label for item in items]
    patch = attention_patching(session, modules, items)
    seconds["patching"] = time.perf_counter() - clock

    clock = time.perf_counter()
    known = {1.0: list(test_predicted[: len(items)])} if test_predicted is not None else {}
    if patch.available:
        known[0.0] = patch.base
    curve = merge_curve(session, modules, items, settings.merge_weights, known)
    seconds["merge_curve"] = time.perf_counter() - clock

    name = cfg.task.metric
    values = {p.weight: metric(session, p.predicted, labels, name) for p in curve}
    diffs = [p.merge_max_abs_diff for p in curve if p.merge_max_abs_diff is not None]
    analysis = Analysis(
        version=ANALYSIS_VERSION,
        probe_size=len(probe_items),
        eval_size=len(items),
        attention_implementation=f"{PROBE_ATTENTION} (eager arithmetic, fp32 softmax)" if patch.available else None,
        effective_rank_definition="exp(entropy of singular values normalised to sum 1)",
        modules=modules_analysis,
        vectors=VECTORS_NAME if run_dir is not None else None,
        attention_shift=None if shift.attention is None else list(shift.attention),
        patching=_patching(session, patch, labels, values, name),
        merge_curve=MergeCurve(
            metric=name,
            weights=[p.weight for p in curve],
            values=[values[p.weight] for p in curve],
            merge_max_abs_diff=max(diffs) if diffs else None,
        ),
        seconds=seconds,
    )
    return analysis, time.perf_counter() - started


def _patching(session: Session, patch, labels: list[int], values: dict[float, float], name: str) -> Patching:
    if not patch.available:
        return Patching(available=False, note="the model's attention does not go through transformers' attention interface")
    base = metric(session, patch.base, labels, name)
    patched = metric(session, patch.patched, labels, name)
    full = values.get(1.0)
    gain = None if full is None else full - base
    n = len(labels)
    # A gain within two binomial standard errors of zero leaves the share undefined.
    threshold = 2 * math.sqrt(max(full or 0.0, 1e-9) * (1 - (full or 0.0)) / max(n, 1)) if full is not None else None
    share = None if gain is None or abs(gain) <= max(threshold or 0.0, 1.0 / max(n, 1)) else (patched - base) / gain
    return Patching(
        available=True, metric=name, n=n, base=base, full=full, patched=patched,
        gain=gain, attention_share=1.0 - share if share is not None else None,
        surviving_share=share,
        probe_max_abs_diff=patch.probe_max_abs_diff,
        note="surviving_share = (patched - base) / (full - base): the gain kept when every layer attends as the "
             "base model does; attention_share = 1 - surviving_share; both null when the gain is within two "
             "standard errors of zero",
    )
