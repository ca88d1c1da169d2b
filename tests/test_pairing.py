"""Paired randomness (issue 11): within a seed, target sets share data order, dropout
masks, the head's init and each LoRA module's initial A."""

import math

import pytest
import torch
from torch import nn

from lora_ablate.plan.resolve import resolve_run
from lora_ablate.run.loggers import NullLogger
from lora_ablate.run.loop import clip_apart, fit
from lora_ablate.run.pairing import derived_seed, generator
from lora_ablate.run.session import prepare
from test_train import compose_run, local_overrides, write_reviews

QUERY = "bert.encoder.layer.0.attention.self.query"


@pytest.fixture(scope="module")
def reviews(tmp_path_factory):
    return write_reviews(tmp_path_factory.mktemp("pairing") / "reviews.csv")


def session_for(reviews, targets: str, seed: int = 0, extra: tuple[str, ...] = ()):
    overrides = local_overrides(reviews) + [f"targets={targets}", f"seed={seed}", *extra]
    cfg, _ = compose_run(overrides)
    resolved = resolve_run(cfg)
    return cfg, resolved, prepare(cfg, resolved, torch.device("cpu"))


def lora_a(session, path: str) -> torch.Tensor:
    return session.model.get_submodule("base_model.model." + path).lora_A["default"].weight.detach().clone()


def test_derived_seed_is_stable_and_keyed():
    # sha256 of "0\x1fhead", first 8 bytes, top bit cleared: fixed across processes
    assert derived_seed(0, "head") == derived_seed(0, "head")
    assert len({derived_seed(0, "head"), derived_seed(1, "head"), derived_seed(0, "lora_A")}) == 3
    assert 0 <= derived_seed(5, "x", 3) < 2**63


def test_a_module_starts_the_same_in_every_target_set(reviews):
    _, qv_plan, qv = session_for(reviews, "qv")
    _, qkv_plan, qkv = session_for(reviews, "qkv")
    a_qv, a_qkv = lora_a(qv, QUERY), lora_a(qkv, QUERY)
    # The qv budget at r=8 is 16 rank units of 64x64 matrices; over three matrices, 6 or 5 each.
    rank = a_qkv.shape[0]
    assert a_qv.shape == (8, 64) and rank in (5, 6) and a_qkv.shape[1] == 64
    assert torch.equal(a_qkv, a_qv[:rank])  # the smaller rank draws a prefix of the same numbers
    # PEFT's init, recomputed here: kaiming-uniform with a=sqrt(5) over fan_in 64 -> bound 1/8
    assert a_qv.abs().max() <= 1 / math.sqrt(64) and a_qv.std() > 0.03
    expected = torch.empty(8, 64)
    nn.init.kaiming_uniform_(expected, a=math.sqrt(5), generator=generator(0, "lora_A", "default", QUERY))
    assert torch.equal(a_qv, expected)
    # B starts at zero, so the adapters change no output at step 0
    assert not qv.model.get_submodule("base_model.model." + QUERY).lora_B["default"].weight.any()
    # the head too: drawn from (seed, "head"), whatever the targets
    head_qv = dict(qv.model.named_parameters())
    head_qkv = dict(qkv.model.named_parameters())
    heads = [n for n in head_qv if "modules_to_save" in n and "classifier" in n]
    assert heads and all(torch.equal(head_qv[n], head_qkv[n]) for n in heads)
    # other modules and other seeds draw other numbers
    assert not torch.equal(lora_a(qv, "bert.encoder.layer.1.attention.self.query"), a_qv)
    _, _, other_seed = session_for(reviews, "qv", seed=1)
    assert not torch.equal(lora_a(other_seed, QUERY), a_qv)


def record_dropout_masks(model: nn.Module) -> list[torch.Tensor]:
    """Zero pattern of every nn.Dropout output, in call order (the input is never exactly 0)."""
    masks: list[torch.Tensor] = []
    for module in model.modules():
        if isinstance(module, nn.Dropout) and module.p > 0:
            module.register_forward_hook(lambda m, args, out: masks.append(out == 0) if m.training else None)
    return masks


def fit_steps(reviews, targets: str, steps: int, seed: int = 0):
    cfg, resolved, session = session_for(reviews, targets, seed, (f"train.max_steps={steps}", "train.eval_every=0"))
    masks = record_dropout_masks(session.model)
    fit(session, cfg.train, seed=cfg.seed, head_names=resolved.plan.head_modules, logger=NullLogger())
    return masks


def test_two_target_sets_of_a_seed_draw_the_same_dropout_masks(reviews):
    # tiny_bert keeps BERT's default dropout (hidden and attention 0.1): 2 layers x 2 + the
    # embeddings' + the classifier's = 6 nn.Dropout calls per step
    q = fit_steps(reviews, "q", steps=3)
    qkv_ffn = fit_steps(reviews, "qkv_ffn", steps=3)
    assert len(q) == len(qkv_ffn) == 3 * 6
    assert all(a.shape == b.shape and torch.equal(a, b) for a, b in zip(q, qkv_ffn))
    dropped = torch.cat([m.flatten().float() for m in q]).mean()
    assert 0.05 < dropped < 0.15  # the masks are real: about p = 0.1 of the units dropped
    other = fit_steps(reviews, "q", steps=1, seed=1)
    assert not torch.equal(other[0], q[0])  # another seed, other masks


def test_head_and_lora_gradients_are_clipped_apart():
    lora, head = nn.Parameter(torch.zeros(3)), nn.Parameter(torch.zeros(2))
    head_grads = []
    for lora_scale in (1.0, 100.0):  # bigger LoRA gradients (another target set) ...
        lora.grad = torch.tensor([3.0, 4.0, 0.0]) * lora_scale
        head.grad = torch.tensor([0.6, 0.8]) * 10  # norm 10
        clip_apart([[lora], [head]], max_norm=1.0)
        head_grads.append(head.grad.clone())
        assert math.isclose(float(lora.grad.norm()), 1.0, rel_tol=1e-6)
    # ... leave the head's clipped gradient as it was: (0.6, 0.8), norm 1
    assert torch.equal(head_grads[0], head_grads[1])
    assert torch.allclose(head_grads[0], torch.tensor([0.6, 0.8]), atol=1e-6)
