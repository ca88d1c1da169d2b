"""Weights are read from safetensors whenever a model has them; pickled .bin weights
only when it has nothing else, and then with a warning."""

import logging
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_model
from transformers import AutoConfig, AutoModelForSequenceClassification

from lora_ablate.config.schema import ModelConfig
from lora_ablate.model.loading import load_config, load_model, resolve_source

TINY = {"vocab_size": 260, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
        "num_attention_heads": 2, "max_position_embeddings": 64, "num_labels": 2}  # fmt: skip


def tiny_folder(path: Path, *, safetensors: bool, bin_file: bytes | None) -> tuple[Path, dict[str, torch.Tensor]]:
    config = AutoConfig.for_model("bert", **TINY)
    torch.manual_seed(1)
    model = AutoModelForSequenceClassification.from_config(config)
    path.mkdir()
    config.save_pretrained(path)
    if safetensors:
        save_model(model, str(path / "model.safetensors"))
    if bin_file is not None:
        (path / "pytorch_model.bin").write_bytes(bin_file)
    return path, {k: v.clone() for k, v in model.state_dict().items()}


def load(folder: Path) -> torch.nn.Module:
    cfg = ModelConfig(name="t", name_or_path=str(folder))
    source = resolve_source(cfg)
    return load_model(cfg, source, load_config(cfg, source), "head", 2)


def test_safetensors_are_preferred_over_a_pickle(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # A .bin that is not even a pickle: loading it would fail, so passing proves it was never read.
    folder, weights = tiny_folder(tmp_path / "m", safetensors=True, bin_file=b"not a pickle")
    with caplog.at_level(logging.WARNING):
        model = load(folder)
    assert torch.equal(model.state_dict()["bert.embeddings.word_embeddings.weight"], weights["bert.embeddings.word_embeddings.weight"])
    assert "safetensors" not in caplog.text


def test_bin_only_models_load_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder, _ = tiny_folder(tmp_path / "m", safetensors=True, bin_file=None)
    state = load_file(folder / "model.safetensors")
    (folder / "model.safetensors").unlink()
    torch.save(state, folder / "pytorch_model.bin")
    with caplog.at_level(logging.WARNING, logger="lora_ablate.model.loading"):
        model = load(folder)
    assert "has no safetensors weights" in caplog.text
    key = "bert.embeddings.word_embeddings.weight"
    assert torch.equal(model.state_dict()[key], state[key])
