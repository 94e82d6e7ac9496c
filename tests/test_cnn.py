"""The CNN on the image sizes fedlearn ships (8x8x1, 28x28x1, 32x32x3); text is refused."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from fedlearn.data import DataSpec
from fedlearn.models import build_model

CFG = {"_target_": "fedlearn.models.cnn.CNN", "channels": 4, "hidden": 16}


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32)])
def test_forward_backward(shape):
    model = build_model(CFG, DataSpec(input_shape=shape, num_classes=10, kind="image"))
    logits = model(torch.rand(5, *shape))
    assert logits.shape == (5, 10)
    F.cross_entropy(logits, torch.randint(0, 10, (5,))).backward()
    assert all(p.grad is not None for p in model.parameters())


def test_refuses_text():
    with pytest.raises(ValueError, match="model=CNN does not fit text data") as err:
        build_model(CFG, DataSpec(input_shape=(80,), num_classes=81, kind="text"))
    assert "\n" not in str(err.value)


def test_experiment_with_cnn_on_shakespeare_is_refused(tmp_path):
    import shutil
    from pathlib import Path

    from fedlearn.experiment import simulate

    shutil.copytree(Path(__file__).parent / "fixtures" / "shakespeare", tmp_path / "texts")
    overrides = [
        "dataset=shakespeare",
        "model=cnn",
        "partitioner=natural",
        "num_clients=2",
        f"dataset.cache_dir={tmp_path}",
        "dataset.seq_len=8",
        "dataset.min_samples=20",
        "progress=false",
    ]
    with pytest.raises(ValueError, match="model=CNN does not fit text data") as err:
        simulate(overrides, run_dir=tmp_path / "run")
    assert "\n" not in str(err.value)
