"""The analyses of a trained adapter (lora_ablate.analysis) on tiny random models: the
update spectra against dense linear algebra, the attention-shift and patching identities
that follow from which matrices are adapted, and the merge curve's end points."""

import csv
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import compose_run, session_with_random_updates

from lora_ablate.analysis.attention_tap import Tap, tapped
from lora_ablate.analysis.lora_modules import adapter_weight
from lora_ablate.analysis.predict import batches
from lora_ablate.analysis.merges import scaled_point
from lora_ablate.analysis.probes import attention_patching, shifts
from lora_ablate.analysis.updates import delta_svd, effective_rank, update_analysis
from lora_ablate.records import RECORD_NAME
from lora_ablate.run.loop import evaluate, forward
from lora_ablate.run.runner import train

WORDS = {0: ["dull", "awful", "boring", "clumsy"], 1: ["great", "moving", "funny", "sharp"]}


@pytest.fixture(scope="module")
def reviews(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "reviews.csv"
    rng = random.Random(0)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["review", "sentiment"])
        for i in range(160):
            writer.writerow([f"film {i} was {' and '.join(rng.sample(WORDS[i % 2], 2))}", "pos" if i % 2 else "neg"])
    return path


def overrides(data: Path, model: str, targets: str, steps: int = 4) -> list[str]:
    return [f"model={model}", "task=local", f"task.path={data}", "task.text_column=review",
            "task.label_column=sentiment", "task.val_size=20", "task.test_size=40", "task.max_length=48",
            "task.label_words=[' bad',' good']", "task.prompt='{text} Verdict:'", f"targets={targets}",
            f"train.max_steps={steps}", "train.batch_size=16", "train.device=cpu", "train.precision=fp32",
            "analysis.probe_size=16", "analysis.eval_size=40"]


def session_for(data: Path, model: str, targets: str, *, only_layer: int | None = None):
    return session_with_random_updates(overrides(data, model, targets), only_layer=only_layer)


# ------------------------------------------------------------------ update spectra


def test_delta_svd_equals_the_dense_svd():
    g = torch.Generator().manual_seed(1)
    b, a = torch.randn(48, 5, generator=g), torch.randn(5, 32, generator=g)
    u, s, v = delta_svd(b, a, 0.7)
    dense = 0.7 * b.double() @ a.double()
    expected = torch.linalg.svdvals(dense)[:5]
    assert torch.allclose(s, expected, rtol=1e-10)
    assert torch.allclose(u @ torch.diag(s) @ v.T, dense, atol=1e-10)
    assert torch.allclose(u.T @ u, torch.eye(5, dtype=torch.float64), atol=1e-10)


def test_effective_rank_is_the_exponential_of_the_spectral_entropy():
    assert effective_rank(torch.tensor([2.0, 2.0, 2.0, 2.0])) == pytest.approx(4.0)
    assert effective_rank(torch.tensor([1.0, 0.0, 0.0])) == pytest.approx(1.0)
    p = np.array([3.0, 1.0]) / 4
    assert effective_rank(torch.tensor([3.0, 1.0])) == pytest.approx(float(np.exp(-(p * np.log(p)).sum())))


@torch.no_grad()
def test_update_numbers_match_dense_computation(reviews):
    session, modules, plan = session_for(reviews, "tiny_bert", "qv")
    rows, tensors = update_analysis(modules, top_k=4)
    assert len(rows) == 2 * 2  # q and v in each of tiny_bert's 2 layers
    for row, a in zip(rows, modules):
        name = a.module.active_adapters[0]
        delta = a.module.scaling[name] * a.module.lora_B[name].weight.double() @ a.module.lora_A[name].weight.double()
        w = a.module.get_base_layer().weight.double()
        u, s, vh = torch.linalg.svd(delta)
        r = a.rank
        assert row["singular_values"] == pytest.approx(s[:4].tolist(), rel=1e-8)
        assert row["relative_norm"] == pytest.approx(float(delta.norm() / w.norm()), rel=1e-8)
        projected = u[:, :r].T @ w @ vh[:r].T
        assert row["amplification"] == pytest.approx(float(delta.norm() / projected.norm()), rel=1e-6)
        assert tensors[f"{row['name']}.left"].shape == (64, 4) and tensors[f"{row['name']}.right"].shape == (64, 4)
        assert tensors[f"{row['name']}.right"].dtype == torch.float16


# ------------------------------------------------------------------ probes


@pytest.mark.parametrize("model", ["tiny_bert", "tiny_llama"])
def test_attention_shift_follows_from_the_adapted_matrices(reviews, model):
    session, modules, _ = session_for(reviews, model, "v")
    items = session.test_items[:16]
    v_only = shifts(session, modules, items)
    assert len(v_only.attention) == 2
    assert v_only.attention[0] == 0.0  # V does not enter layer 0's attention probabilities
    assert v_only.attention[1] > 0  # but layer 1's inputs changed
    assert all(value > 0 for value in v_only.content.values())
    session, modules, _ = session_for(reviews, model, "q")
    q_only = shifts(session, modules, items)
    assert q_only.attention[0] > 0


@pytest.mark.parametrize("model", ["tiny_bert", "tiny_llama"])
def test_probe_attention_reproduces_the_model(reviews, model):
    session, modules, _ = session_for(reviews, model, "qv")
    patch = attention_patching(session, modules, session.test_items[:24])
    assert patch.available
    assert patch.probe_max_abs_diff < 1e-4
    assert len(patch.base) == len(patch.patched) == 24


@pytest.mark.slow
@pytest.mark.parametrize("model", ["tiny_bert", "tiny_llama"])
def test_patching_identities(reviews, model):
    """Only the last layer adapted: with `q` the only change is that layer's attention, so
    patching it recovers the base model exactly; with `v` attention never changes, so
    patching changes nothing."""
    for targets, same_as in (("q", "base"), ("v", "full")):
        session, modules, _ = session_for(reviews, model, targets, only_layer=1)
        batch_items = session.test_items[:12]
        _, batch = next(batches(session, batch_items))
        tap = Tap()
        with torch.no_grad(), tapped(session.model, tap):
            tap.mode = "record"
            with adapter_weight(modules, 0.0):
                _, base = forward(session, batch)
            tap.mode = "patch"
            _, patched = forward(session, batch)
            tap.mode = "off"
            _, full = forward(session, batch)
        assert not torch.allclose(base, full)  # the update does change the output
        assert torch.allclose(patched, base if same_as == "base" else full, atol=1e-6)
        patch = attention_patching(session, modules, batch_items)
        plain = evaluate(session, batch_items, "x").predicted
        assert patch.patched == (patch.base if same_as == "base" else plain)


# ------------------------------------------------------------------ merge curve


@pytest.mark.parametrize("model", ["tiny_bert", "tiny_llama"])
def test_merge_curve_end_points(reviews, model):
    session, modules, _ = session_for(reviews, model, "qv")
    items = session.test_items
    adapted = evaluate(session, items, "test")
    one = scaled_point(session, modules, items, 1.0)
    assert one.predicted == adapted.predicted
    assert one.merge_max_abs_diff < 1e-4
    zero = scaled_point(session, modules, items, 0.0)
    with torch.no_grad():  # the base model with the trained head: every update zeroed
        for a in modules:
            a.module.lora_B[a.module.active_adapters[0]].weight.zero_()
    base = evaluate(session, items, "test")
    assert zero.predicted == base.predicted
    assert zero.merge_max_abs_diff == 0.0


# ------------------------------------------------------------------ in a run


@pytest.mark.slow
def test_run_records_the_analysis_and_writes_the_vectors(reviews, tmp_path):
    from safetensors.numpy import load_file

    args = overrides(reviews, "tiny_bert", "qkv_ffn", steps=6) + ["analysis.top_k=2"]
    cfg = compose_run(args)
    train(cfg, run_dir=tmp_path / "on", overrides=args)
    record = json.loads((tmp_path / "on" / RECORD_NAME).read_text())
    analysis = record["analysis"]
    assert record["cost"]["analysis_seconds"] > 0
    plan = record["plan"]["modules"]
    assert [m["name"] for m in analysis["modules"]] == [m["name"] for m in plan]
    vectors = load_file(str(tmp_path / "on" / "analysis.safetensors"))
    assert len(vectors) == 2 * len(plan)
    for m in plan:  # k = min(rank, top_k) singular vectors on each side
        k = min(m["rank"], 2)
        assert vectors[f"{m['name']}.left"].shape == (m["d_out"], k)
        assert vectors[f"{m['name']}.right"].shape == (m["d_in"], k)
    curve = analysis["merge_curve"]
    assert curve["weights"] == [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5]
    # s=1 is the run's own test evaluation on the first eval_size examples
    correct = [p == y for p, y in zip(*(record["predictions"]["test"][k] for k in ("predicted", "labels")))]
    assert curve["values"][4] == pytest.approx(sum(correct[:40]) / 40)
    assert curve["values"][0] == analysis["patching"]["base"]
    assert len(analysis["attention_shift"]) == 2

    off = args + ["analysis.enabled=false"]
    train(compose_run(off), run_dir=tmp_path / "off", overrides=off)
    record = json.loads((tmp_path / "off" / RECORD_NAME).read_text())
    assert record["analysis"] is None and record["cost"]["analysis_seconds"] is None
    assert not (tmp_path / "off" / "analysis.safetensors").exists()


@pytest.mark.parametrize("bad", ["analysis.probe_size=0", "analysis.top_k=-1", "analysis.merge_weights=[]"])
def test_bad_analysis_settings_are_config_errors(reviews, tmp_path, bad):
    from lora_ablate.errors import ConfigError

    args = overrides(reviews, "tiny_bert", "qv") + [bad]
    with pytest.raises(ConfigError, match="analysis."):
        train(compose_run(args), run_dir=tmp_path, overrides=args)
    assert not (tmp_path / RECORD_NAME).exists()
