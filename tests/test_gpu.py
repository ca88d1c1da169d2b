"""The CUDA path: device auto-detection, bf16 autocast, TF32, memory. Skipped without CUDA."""

import json

import pytest
import torch

from test_train import local_overrides, train_once, write_reviews

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]


@pytest.fixture(scope="module")
def reviews(tmp_path_factory):
    return write_reviews(tmp_path_factory.mktemp("gpu-data") / "reviews.csv")


def gpu_overrides(data, model="tiny_bert"):
    return [o for o in local_overrides(data, model=model) if o not in ("train.device=cpu", "train.precision=fp32")]


@pytest.mark.parametrize("model", ["tiny_bert", "tiny_llama", "tiny_gpt2"])
def test_auto_device_trains_on_cuda_in_bf16(reviews, tmp_path, model):
    record = train_once(gpu_overrides(reviews, model), tmp_path)
    assert record["status"] == "completed"
    assert record["cost"]["device"].startswith("cuda")
    assert record["cost"]["precision"] == "bf16"
    assert record["cost"]["peak_memory_bytes"] > 0
    assert torch.backends.cuda.matmul.allow_tf32
    assert record["provenance"]["device_name"] == torch.cuda.get_device_name(0)
    json.dumps(record, allow_nan=False)


def test_fp32_on_cuda_when_asked(reviews, tmp_path):
    record = train_once(gpu_overrides(reviews) + ["train.precision=fp32"], tmp_path)
    assert record["cost"]["precision"] == "fp32"
    assert record["merge_max_abs_diff"] < 1e-3


def test_cuda_and_cpu_agree_roughly(reviews, tmp_path):
    gpu = train_once(gpu_overrides(reviews) + ["train.precision=fp32"], tmp_path / "gpu")
    cpu = train_once(local_overrides(reviews), tmp_path / "cpu")
    assert abs(gpu["metrics"]["val/loss"] - cpu["metrics"]["val/loss"]) < 1e-2
